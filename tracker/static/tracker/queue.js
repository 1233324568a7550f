// The "select all on this page" box of the supervisors' queue. Loaded from a file: strict CSP.
document.addEventListener("change", (event) => {
  const box = event.target;
  if (!box.matches || !box.matches("#queue-table .select-all")) return;
  for (const row of document.querySelectorAll('#queue-table input[name="order"]')) {
    row.checked = box.checked;
  }
});

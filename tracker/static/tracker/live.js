// The card page's live parts, without inline script or eval (strict CSP).
//
// Polling that pauses in hidden tabs. htmx's `every 30s [document.visibilityState ...]` evaluates
// its filter with eval, which the CSP forbids. Instead, an element with data-poll-seconds="N"
// (and "poll" in its hx-trigger) gets a "poll" event every N seconds while the tab is visible; a
// tab that comes back after more than N seconds polls at once. The server stops the polling by
// answering with markup that has neither the attribute nor the trigger (a terminal order).
//
// Failures the server never sees (browser timeout, network down, a 5xx) show #live-failed, so
// the indicator never spins without a word; the next live request hides it again.
(function () {
  "use strict";
  var lastPoll = new WeakMap();

  function poll() {
    var now = Date.now();
    var visible = document.visibilityState === "visible";
    document.querySelectorAll("[data-poll-seconds]").forEach(function (element) {
      if (!lastPoll.has(element)) {
        lastPoll.set(element, now); // new on the page: it has just been asked or swapped in
        return;
      }
      var due = lastPoll.get(element) + Number(element.dataset.pollSeconds) * 1000;
      if (visible && now >= due && window.htmx) {
        lastPoll.set(element, now);
        window.htmx.trigger(element, "poll");
      }
    });
  }

  function showFailure(show) {
    var notice = document.getElementById("live-failed");
    if (notice) {
      notice.hidden = !show;
    }
  }

  function isLive(event) {
    return event.target instanceof Element && event.target.closest("[data-live]") !== null;
  }

  setInterval(poll, 1000);
  document.addEventListener("visibilitychange", poll);
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (isLive(event)) {
      showFailure(false);
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (isLive(event) && !event.detail.successful) {
      showFailure(true);
    }
  });
})();

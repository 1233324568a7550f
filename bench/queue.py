"""Scenario `queue`: the supervisors' work queue and its CSV export.

Budget: `/stuck/` first page ≤ 150 ms p95 server time with 1,000,000 orders (about 3 % of them
needing attention); `/stuck/export.csv` of 100,000 rows with the serving process's peak memory
within 50 MB of its idle size.

The first page is asked by a supervisor, one request at a time, as the default view and (for
information) with filters, another sort, the next page, the htmx table fragment and the
overview charts computed afresh. For the export the queue is widened to 100,000 rows (delivered
orders turned into parcels with no carrier movement), served by a gunicorn of one worker whose
resident set is sampled every 10 ms and whose kernel high-water mark (VmHWM, reset just before)
is read after; the widened orders are put back afterwards.
"""

import html
import re
import threading
import time
from typing import Any

from bench import data, db, http, procs
from bench.pages import Client, cpu_per_request, login
from bench.report import ScenarioResult, summary

P95_BUDGET = 150.0  # milliseconds
MEMORY_BUDGET = 50.0  # MiB over idle
EXPORT_ROWS = 100_000
VARIANTS = {
    "default view": "/stuck/",
    "late only": "/stuck/?reason=late",
    "silent only": "/stuck/?reason=silent",
    "stage in production": "/stuck/?stage=CARD_PROD_ONGOING",
    "one production site": "/stuck/?site=PC-FR-GEM-01",
    "sorted by due date": "/stuck/?sort=due",
    "sorted by card, descending": "/stuck/?sort=card&dir=desc",
    "acknowledged too": "/stuck/?show=all",
    "aged 3-7 days": "/stuck/?age=3-7",
}
_NEXT_PAGE = re.compile(r'href="\?([^"]*after=[^"]*)"')
_SAVED = "bench_widened"


def run(ctx: procs.Context) -> ScenarioResult:
    result = ScenarioResult("queue", issue=6)
    url = ctx.database_url
    dataset = data.prepare(ctx, url, ctx.orders)
    result.details["dataset"] = dataset.as_json()
    rounds = 10 if ctx.quick else 100
    export_rows = min(EXPORT_ROWS, ctx.orders // 10)
    _restore(url)  # a run that died half-way left widened orders behind
    with procs.running(ctx) as processes:
        sandbox = procs.start_sandbox(ctx, processes)
        web = procs.start_web(ctx, processes, "queue-web", url, sandbox.url)
        client = Client(web, login(web, "bench-supervisor"))
        ctx.log(f"queue: first pages, {rounds} rounds")
        pages = _first_pages(client, rounds)
        overview = _overview(client, url, 3 if ctx.quick else 10)
        cpu = cpu_per_request(client, url, ["/stuck/"] * (5 if ctx.quick else 30))
        processes.stop(web.process)
        ctx.log(f"queue: export of {export_rows:,} rows")
        widened = _widen(url, export_rows)
        try:
            exporter = procs.start_web(ctx, processes, "queue-export", url, sandbox.url, workers=1)
            export = _export(Client(exporter, login(exporter, "bench-supervisor")), url)
        finally:
            _restore(url)
    export["widened_orders"] = widened
    result.details.update(
        first_pages=pages, overview_ms=overview, export=export, cpu_ms_per_first_page=cpu
    )
    default = pages["default view"]
    result.check(
        "/stuck/ first page p95",
        default["p95"],
        "ms",
        P95_BUDGET,
        note=f"{dataset.needing_attention:,} of {dataset.orders:,} orders need attention",
    )
    result.check(
        "/stuck/ first page CPU per request",
        cpu["app"],
        "ms",
        note=f"gunicorn; PostgreSQL {cpu['database']} ms",
    )
    slowest = max(pages, key=lambda name: pages[name]["p95"] or 0)
    result.check("/stuck/ slowest variant p95", pages[slowest]["p95"], "ms", note=slowest)
    result.check(
        "/stuck/overview/ computed afresh p95", overview["p95"], "ms", note="cached 30 s after"
    )
    result.check(
        f"export.csv of {export['rows']:,} rows: peak RSS over idle",
        export["growth_mib"],
        "MiB",
        MEMORY_BUDGET,
        note=f"idle {export['idle_mib']} MiB, {export['seconds']} s,"
        f" {export['rows_per_second']:,.0f} rows/s",
    )
    low, high = export["expected_rows"]
    result.check(
        "export.csv rows missing or extra",
        float(export["rows_off"]),
        "rows",
        0,
        note=f"{low:,} to {high:,} expected while it ran",
    )
    result.notes.append(f"{'first page of /stuck/':<36} {'p50':>8} {'p95':>8} {'max':>8}")
    for name, times in pages.items():
        result.notes.append(f"{name:<36} {times['p50']:>8} {times['p95']:>8} {times['max']:>8}")
    return result


def _first_pages(client: Client, rounds: int) -> dict[str, dict[str, Any]]:
    paths = dict(VARIANTS)
    _, first = client.get("/stuck/")
    found = _NEXT_PAGE.search(first.body.decode())
    if found:
        paths["next page"] = "/stuck/?" + html.unescape(found.group(1))
    sent: dict[str, list[str]] = {name: [] for name in [*paths, "htmx table fragment"]}
    for turn in range(rounds + 2):  # two unmeasured rounds warm every worker up
        for name, path in paths.items():
            bench_id, answer = client.get(path)
            _expect(answer, name)
            if turn >= 2:
                sent[name].append(bench_id)
        bench_id, answer = client.get(
            "/stuck/", **{"HX-Request": "true", "HX-Target": "queue-table"}
        )
        _expect(answer, "htmx table fragment")
        if turn >= 2:
            sent["htmx table fragment"].append(bench_id)
    server = client.web.server_ms()
    return {name: summary([server[i] for i in ids]) for name, ids in sent.items()}


def _overview(client: Client, url: str, count: int) -> dict[str, Any]:
    sent = []
    for _ in range(count):
        with db.connect(url) as conn:  # the overview is cached for 30 s: measure it uncached
            conn.execute("DELETE FROM tracker_cache WHERE cache_key LIKE %s", ["%queue-overview%"])
        bench_id, answer = client.get("/stuck/overview/")
        _expect(answer, "overview")
        sent.append(bench_id)
    server = client.web.server_ms()
    return summary([server[bench_id] for bench_id in sent])


def _expect(answer: http.Answer, what: str) -> None:
    if answer.status != 200:
        raise RuntimeError(f"{what} answered {answer.status}")


def _widen(url: str, rows: int) -> int:
    """Make `rows` orders need attention (delivered orders become parcels gone quiet); the old
    values are kept in a table of their own for _restore()."""
    with db.connect(url) as conn:
        missing = rows - data.needing_attention(conn)
        if missing <= 0:
            return 0
        with conn.transaction():
            conn.execute(
                f"CREATE TABLE {_SAVED} AS SELECT id, shipment_status, silent_after,"
                " attention_since FROM tracker_cardorder WHERE id IN (SELECT id FROM"
                " tracker_cardorder WHERE attention_since IS NULL AND stage = 'CARD_SHIPPED'"
                " AND shipment_status = 'Delivered' ORDER BY random() LIMIT %s)",
                [missing],
            )
            conn.execute(
                "UPDATE tracker_cardorder AS o SET shipment_status = 'InTransit',"
                " silent_after = now() - random() * interval '3 days',"
                f" attention_since = now() - random() * interval '3 days' FROM {_SAVED} AS s"
                " WHERE o.id = s.id"
            )
        conn.execute("ANALYZE tracker_cardorder")
        return missing


def _restore(url: str) -> None:
    with db.connect(url) as conn:
        if not conn.execute("SELECT to_regclass(%s)", [_SAVED]).fetchone()[0]:
            return
        with conn.transaction():
            conn.execute(
                "UPDATE tracker_cardorder AS o SET shipment_status = s.shipment_status,"
                " silent_after = s.silent_after, attention_since = s.attention_since"
                f" FROM {_SAVED} AS s WHERE o.id = s.id"
            )
            conn.execute(f"DROP TABLE {_SAVED}")
        conn.execute("VACUUM (ANALYZE) tracker_cardorder")


def _export(client: Client, url: str) -> dict[str, Any]:
    # What the default filter matches; orders keep entering the queue as the clock runs, so
    # the export may hold any count between the one before and the one after.
    with db.connect(url) as conn:
        expected_before = data.needing_attention(conn)
    [pid] = client.web.worker_pids()
    client.get("/stuck/")  # warm: imports, templates, connection
    client.get("/stuck/export.csv?stage=CARD_PROD_REQUESTED")
    time.sleep(0.5)
    procs.reset_peak(pid)
    idle = procs.memory_kib(pid)["VmRSS"]
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append(procs.memory_kib(pid)["VmRSS"])
            except OSError:
                return
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    bench_id, answer = client.get("/stuck/export.csv")
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    _expect(answer, "export.csv")
    high_water = procs.memory_kib(pid)["VmHWM"]
    peak = max([high_water, *samples])
    rows = answer.body.count(b"\n") - 1
    with db.connect(url) as conn:
        expected_after = data.needing_attention(conn)
    server = client.web.server_ms()
    return {
        "rows": rows,
        "expected_rows": [expected_before, expected_after],
        "rows_off": max(0, expected_before - rows, rows - expected_after),
        "bytes": answer.received,
        "seconds": round(seconds, 1),
        "server_ms": server.get(bench_id),
        "rows_per_second": rows / max(seconds, 1e-9),
        "idle_mib": round(idle / 1024, 1),
        "peak_mib": round(peak / 1024, 1),
        "growth_mib": round((peak - idle) / 1024, 1),
        "samples": len(samples),
    }

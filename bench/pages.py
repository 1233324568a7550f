"""Scenario `pages`: the card page and search, by server time.

Budget: card page and search ≤ 25 ms p95 server time with 1,000,000 orders, and no slower than
1.3 × their time with 10,000 orders; the page's time does not depend on D1's latency.

Two gunicorns (DJANGO_DEBUG=0), one on the main dataset and one on the 10,000-order baseline
(same generator, same shapes), are asked the same kinds of request in alternation by one client
logged in as an agent, so the machine's load falls on both alike. Server time is gunicorn's own
(%(D)s in its access log: from the parsed request to the last byte written).

Kinds: the card page of a random card, and a search by each key, exact and by prefix (one hit
redirects to the card; a common input file or a short prefix lists 50 and says "refine"). Last,
the card page again while the D1 sandbox answers after a second: the first render never asks D1.
"""

import random
import re
from collections import defaultdict
from typing import Any

from bench import data, db, http, procs
from bench.report import ScenarioResult, percentile, summary
from tracker.queries import SEARCH_FIELDS  # the keys the search serves

P95_BUDGET = 25.0  # milliseconds
RATIO_BUDGET = 1.3
D1_LATENCY_MS = 1000
# How an agent would shorten each key, and what it gives with the generator's data: one card
# (card_id, operation_id, tracking_number), 100 orders (issuer_request_id), 50,000 orders (input
# file name, 100 files), about 20 orders (customer reference).
PREFIXES = {
    "card_id": lambda value: value[:12],
    "issuer_request_id": lambda value: value[:-2],
    "operation_id": lambda value: value[:13],
    "tracking_number": lambda value: value[:-3],
    "input_file_name": lambda value: value[:13],
    "customer_reference": lambda value: value[:-1],
}
KINDS = (
    "card page",
    *(f"search {field} exact" for field in SEARCH_FIELDS),
    *(f"search {field} prefix" for field in SEARCH_FIELDS),
)
_CSRF_FIELD = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def login(web: procs.Web, username: str) -> dict[str, str]:
    """Log in through the login page as a browser would; return the session's cookies."""
    form = http.request(web.address, "GET", "/accounts/login/")
    found = _CSRF_FIELD.search(form.body)
    if form.status != 200 or found is None:
        raise RuntimeError(f"login page answered {form.status}")
    cookies = {**form.cookies, "tz": "Europe/Paris"}
    body = (
        f"csrfmiddlewaretoken={http.query(found.group(1).decode())}"
        f"&username={http.query(username)}&password={http.query(data.PASSWORD)}"
    ).encode()
    answer = http.request(
        web.address,
        "POST",
        "/accounts/login/",
        headers={
            "Cookie": http.cookie_header(cookies),
            "Content-Type": "application/x-www-form-urlencoded",
            "Referer": f"https://{procs.HOST}:{web.port}/accounts/login/",
        },
        body=body,
    )
    if answer.status != 302 or "sessionid" not in answer.cookies:
        raise RuntimeError(f"login as {username} answered {answer.status}")
    return {**cookies, **answer.cookies}


class Client:
    """One logged-in user of one server; each request carries an X-Bench-Id for the log."""

    def __init__(self, web: procs.Web, cookies: dict[str, str]) -> None:
        self.web = web
        self.cookie = http.cookie_header(cookies)
        self.sent = 0

    def get(self, path: str, **headers: str) -> tuple[str, http.Answer]:
        self.sent += 1
        bench_id = f"{self.web.name}-{self.sent}"
        answer = http.request(
            self.web.address,
            "GET",
            path,
            headers={"Cookie": self.cookie, "X-Bench-Id": bench_id, **headers},
        )
        return bench_id, answer


def cpu_per_request(client: Client, url: str, paths: list[str]) -> dict[str, float]:
    """Mean CPU milliseconds per request of the gunicorn workers and of PostgreSQL, one request
    at a time: what a page costs whatever else the machine is doing."""
    client.get(paths[0])  # connections open, nothing lazy left
    app_pids, db_pids = client.web.pids(), db.backend_pids(url)
    app, database = procs.cpu_seconds(app_pids), procs.cpu_seconds(db_pids)
    for path in paths:
        client.get(path)
    app_used = procs.cpu_used(app, procs.cpu_seconds(app_pids))
    db_used = procs.cpu_used(database, procs.cpu_seconds(db_pids))
    client.web.server_ms()  # not part of any measurement
    return {
        "app": round(app_used * 1000 / len(paths), 1),
        "database": round(db_used * 1000 / len(paths), 1),
    }


def sample_paths(url: str, kinds_rounds: int, seed: int) -> dict[str, list[str]]:
    """For each kind, `kinds_rounds` request paths drawn from random orders of this database."""
    rng = random.Random(seed)
    with db.connect(url) as conn:
        top = conn.execute("SELECT max(id) FROM tracker_cardorder").fetchone()[0]
        ids = [rng.randint(1, top) for _ in range(kinds_rounds * 40)]
        rows = conn.execute(
            "SELECT issuer_id, card_id, " + ", ".join(SEARCH_FIELDS[1:]) + " FROM"
            " tracker_cardorder WHERE id = ANY(%s)",
            [ids],
        ).fetchall()
    rng.shuffle(rows)
    paths: dict[str, list[str]] = {
        "card page": [f"/cards/{row[0]}/{row[1]}/" for row in rows[:kinds_rounds]]
    }
    for index, field in enumerate(SEARCH_FIELDS, start=1):
        values = [row[index] for row in rows if row[index]][:kinds_rounds]
        if len(values) < kinds_rounds:
            raise RuntimeError(f"too few orders with a {field} to sample")
        paths[f"search {field} exact"] = [f"/?q={http.query(value)}" for value in values]
        paths[f"search {field} prefix"] = [
            f"/?q={http.query(PREFIXES[field](value))}" for value in values
        ]
    return paths


def run(ctx: procs.Context) -> ScenarioResult:
    result = ScenarioResult("pages", issue=5)
    base_url = db.derived(ctx.database_url, "base")
    base_orders = min(10_000, ctx.orders // 10)
    big = data.prepare(ctx, ctx.database_url, ctx.orders)
    base = data.prepare(ctx, base_url, base_orders)
    result.details["datasets"] = {"main": big.as_json(), "baseline": base.as_json()}
    rounds = 10 if ctx.quick else 150
    cpu_rounds = 5 if ctx.quick else 30
    with procs.running(ctx) as processes:
        sandbox = procs.start_sandbox(ctx, processes)
        webs = {
            "main": procs.start_web(ctx, processes, "pages-main", ctx.database_url, sandbox.url),
            "baseline": procs.start_web(ctx, processes, "pages-baseline", base_url, sandbox.url),
        }
        clients = {name: Client(web, login(web, "bench-agent")) for name, web in webs.items()}
        paths = {
            "main": sample_paths(ctx.database_url, rounds + 3 + cpu_rounds, seed=5),
            "baseline": sample_paths(base_url, rounds + 3, seed=5),
        }
        ctx.log(f"pages: {rounds} rounds of {len(KINDS)} kinds on both servers")
        times, statuses = _measure(clients, paths, rounds, seed=11)
        cpu = {
            kind: cpu_per_request(clients["main"], ctx.database_url, kind_paths[-cpu_rounds:])
            for kind, kind_paths in paths["main"].items()
        }
        sandbox.remote.set_faults(latency_ms=D1_LATENCY_MS)
        slow_d1 = _card_pages(clients["main"], paths["main"]["card page"], rounds)
        sandbox.remote.set_faults()
    by_kind = {kind: {name: summary(times[name][kind]) for name in webs} for kind in KINDS}
    result.details["server_ms"] = by_kind
    result.details["statuses"] = statuses
    result.details["rounds"] = rounds
    result.details["card_page_with_slow_d1_ms"] = summary(slow_d1)
    result.details["cpu_ms_per_request"] = cpu
    _checks(result, by_kind, big.orders, base.orders, slow_d1, cpu)
    return result


def _measure(
    clients: dict[str, Client], paths: dict[str, dict[str, list[str]]], rounds: int, seed: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, int]]:
    rng = random.Random(seed)
    kinds = list(KINDS)
    sent: dict[str, list[tuple[str, str]]] = defaultdict(list)  # server -> (kind, bench id)
    statuses: dict[str, int] = defaultdict(int)
    order = list(clients)
    for turn in range(rounds + 3):  # three unmeasured rounds warm every worker up
        rng.shuffle(kinds)
        for kind in kinds:
            rng.shuffle(order)
            for name in order:
                bench_id, answer = clients[name].get(paths[name][kind][turn])
                statuses[str(answer.status)] += 1
                if answer.status not in (200, 302):
                    raise RuntimeError(f"{kind} on {name}: {answer.status}")
                if turn >= 3:
                    sent[name].append((kind, bench_id))
    times: dict[str, dict[str, list[float]]] = {}
    for name, client in clients.items():
        server = client.web.server_ms()
        times[name] = defaultdict(list)
        for kind, bench_id in sent[name]:
            times[name][kind].append(server[bench_id])
    return times, dict(statuses)


def _card_pages(client: Client, paths: list[str], count: int) -> list[float]:
    client.web.server_ms()
    sent = []
    for path in paths[:count]:
        bench_id, answer = client.get(path)
        if answer.status != 200:
            raise RuntimeError(f"card page answered {answer.status} while D1 was slow")
        sent.append(bench_id)
    server = client.web.server_ms()
    return [server[bench_id] for bench_id in sent]


def _checks(
    result: ScenarioResult,
    by_kind: dict[str, dict[str, dict[str, Any]]],
    orders: int,
    base_orders: int,
    slow_d1: list[float],
    cpu: dict[str, dict[str, float]],
) -> None:
    size = f"{orders:,} orders"
    card = by_kind["card page"]
    result.check("card page p95", card["main"]["p95"], "ms", P95_BUDGET, note=size)
    result.check(
        f"card page p95 vs {base_orders:,} orders",
        _ratio(card),
        "x",
        RATIO_BUDGET,
        note=f"{card['main']['p95']} / {card['baseline']['p95']} ms",
    )
    searches = {kind: times for kind, times in by_kind.items() if kind.startswith("search")}
    slowest = max(searches, key=lambda kind: searches[kind]["main"]["p95"])
    result.check(
        "search p95, slowest kind",
        searches[slowest]["main"]["p95"],
        "ms",
        P95_BUDGET,
        note=f"{slowest.removeprefix('search ')}, {size}",
    )
    worst = max(searches, key=lambda kind: _ratio(searches[kind]))
    result.check(
        f"search p95 vs {base_orders:,} orders, worst kind",
        _ratio(searches[worst]),
        "x",
        RATIO_BUDGET,
        note=f"{worst.removeprefix('search ')}: {searches[worst]['main']['p95']}"
        f" / {searches[worst]['baseline']['p95']} ms",
    )
    result.check(
        f"card page p95 while D1 takes {D1_LATENCY_MS} ms",
        percentile(slow_d1, 0.95),
        "ms",
        P95_BUDGET,
        note="first render never waits for D1",
    )
    result.check(
        "card page CPU per request",
        cpu["card page"]["app"],
        "ms",
        note=f"gunicorn; PostgreSQL {cpu['card page']['database']} ms",
    )
    heaviest = max(searches, key=lambda kind: cpu[kind]["app"])
    result.check(
        "search CPU per request, heaviest kind",
        cpu[heaviest]["app"],
        "ms",
        note=f"{heaviest.removeprefix('search ')}; PostgreSQL {cpu[heaviest]['database']} ms",
    )
    lines = [
        f"{'server ms (cpu ms)':<32} {'p50 main':>9} {'p95 main':>9} {'p95 base':>9}"
        f" {'ratio':>6} {'cpu app':>8} {'cpu db':>7}"
    ]
    for kind, times in by_kind.items():
        lines.append(
            f"{kind:<32} {times['main']['p50']:>9} {times['main']['p95']:>9}"
            f" {times['baseline']['p95']:>9} {_ratio(times):>6}"
            f" {cpu[kind]['app']:>8} {cpu[kind]['database']:>7}"
        )
    result.notes.extend(lines)


def _ratio(times: dict[str, dict[str, Any]]) -> float:
    return round(times["main"]["p95"] / max(times["baseline"]["p95"], 0.001), 2)

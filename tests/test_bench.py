"""The benchmark harness's building blocks at a tiny scale, so that `make bench` cannot rot.

`make bench` itself takes minutes and is no test; these check that the generator writes orders
the pages and the queue can read, that the load generator and the notification workload deliver
what they say, and that the figures the report prints are computed right.
"""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from bench import data, db, http, notifications, report
from bench.reconcile import busiest_window
from tests.conftest import drain
from tracker import attention
from tracker.models import CardOrder, TimelineEvent

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def generated(on_postgres, database_url: str) -> str:
    with db.connect(database_url) as conn:
        data.generate(conn, 1_000)
    return database_url


def test_the_generator_writes_an_order_book_the_queue_and_pages_agree_with(generated, client):
    assert CardOrder.objects.count() == 1_000
    assert 3 < TimelineEvent.objects.count() / 1_000 < 5
    now = timezone.now()
    queue = list(CardOrder.objects.filter(attention.needs_attention(now)))
    assert 0.02 <= len(queue) / 1_000 <= 0.06
    # Every order the generator put in the queue has a reason tracker/attention.py can name.
    assert all(attention.reasons(order, now) for order in queue)
    with db.connect(generated) as conn:
        stages = data.stage_counts(conn)
    assert stages["CARD_SHIPPED"] > 800 and len(stages) >= 10
    # The identity sequences were moved past the generated ids: the ingest can insert again.
    assert CardOrder.objects.create(issuer_id="ISS7K2M40Q", card_id="crd-after").pk == 1_001

    data.ensure_users(generated)
    signed_in = client.post(
        "/accounts/login/", {"username": "bench-supervisor", "password": data.PASSWORD}
    )
    assert signed_in.status_code == 302
    assert client.get("/stuck/").status_code == 200
    order = queue[0]
    assert client.get(f"/cards/{order.issuer_id}/{order.card_id}/").status_code == 200
    assert client.get("/", {"q": "CI_BATCH_0000"}).status_code == 200


def test_the_load_generator_delivers_the_workload_and_nothing_is_lost(
    live_server, settings, on_postgres, database_url, tmp_path
):
    settings.D1_ISSUER_IDS = [*settings.D1_ISSUER_IDS, notifications.ISSUER]
    token = httpx.post(
        live_server.url + notifications.TOKEN_PATH,
        data={"grant_type": "client_credentials"},
        auth=(settings.D1_NOTIFY_CLIENT_ID, settings.D1_NOTIFY_CLIENT_SECRET),
    ).json()["access_token"]
    workload = notifications.Workload(prefix="t", duplicate_share=0.1)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies, requests = {}, []
    for n in range(30):
        ops = workload.operations(1 if n % 3 else 10, new_share=0.5)
        body = json.dumps({"operations": ops})
        bodies[str(n)] = (body.encode(), ops)
        requests.append(
            {"id": str(n), "method": "POST", "path": notifications.NOTIFY_PATH,
             "headers": headers, "body": body}
        )  # fmt: skip
    host, port = live_server.url.removeprefix("http://").split(":")
    spec = {"host": host, "port": int(port), "mode": "open", "rate": 40, "concurrency": 4,
            "duration": 1, "requests": requests}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-m", "bench.loadgen", tmp_path / "spec.json", tmp_path / "out"],
        cwd=BASE_DIR,
        check=True,
        timeout=60,
    )
    outcome = json.loads((tmp_path / "out").read_text())
    sent = notifications.Sent(bodies, {row[0]: row[4] for row in outcome["rows"]})
    assert set(sent.answers.values()) == {204}
    drain()  # what the bench's appliers do
    problems = notifications.verify(database_url, sent)
    assert problems["bodies"] == 30 and problems["cards"] > 30
    assert (problems["missing_bodies"], problems["not_processed"], problems["wrong_cards"]) == (
        0,
        0,
        0,
    )
    outcome["server_ms"] = {}
    outcome["cpu"] = {"app": 0.1, "database": 0.1, "loadgen": 0.1, "wall": 1.0,
                      "machine_busy_share": 0.5}  # fmt: skip
    figures = notifications.figures(outcome, 1, "open")
    assert figures["posts"] == 30 and figures["answer_ms"]["p95"] > 0


def test_the_busiest_second_is_counted_over_sliding_windows():
    # 3 calls in [0.5, 1.4] although no aligned second holds more than 2.
    assert busiest_window([0.1, 0.5, 0.9, 1.4, 2.6]) == 3
    assert busiest_window([0.0, 1.0, 2.0]) == 1
    assert busiest_window([]) == 0


def test_percentiles_and_the_table_say_what_was_measured():
    assert report.percentile(list(range(1, 101)), 0.95) == 95
    assert report.percentile([7.0], 0.95) == 7.0
    result = report.ScenarioResult("pages", issue=5)
    result.check("card page p95", 31.0, "ms", 25)
    result.check("orders/s", 600.0, "ops/s", 500, at_most=False)
    result.check("just a figure", 3.0, "ms")
    text = report.table([result])
    assert [line.split()[-1] for line in text.splitlines()[2:]] == ["FAIL", "PASS", "info"]


def test_the_http_client_reads_an_answer_and_its_cookies(live_server):
    host, port = live_server.url.removeprefix("http://").split(":")
    answer = http.request((host, int(port)), "GET", "/accounts/login/")
    assert answer.status == 200 and "csrftoken" in answer.cookies

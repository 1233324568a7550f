"""The missed-notification sweep (`manage.py reconcile`) against the D1 sandbox.

Most tests run the sweep in this process with Django's ImmediateBackend (each task runs as it
is enqueued, on one thread), so they run on SQLite too. The worker tests at the end run real
`db_worker` processes and `reconcile` commands against the PostgreSQL test database.
"""

import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from bench.reconcile import busiest_window as busiest_second
from tests.conftest import ISSUER, drain, make_operation, op, run_command, staff
from tests.sandbox_fixtures import card
from tests.test_recheck import worker_env
from tracker import env, ingest, roles, serialize
from tracker.d1 import breaker
from tracker.models import CardOrder, Source, Sweep, SweepClaim, TimelineEvent
from tracker.reconcile import sweep

ROOT = Path(__file__).resolve().parent.parent
STATUS_PATH = "/productionStatus"
OPEN_STAGES = ("CARD_PROD_REQUESTED", "DATA_PREPARED", "CARD_PROD_READY", "CARD_PROD_ONGOING")
IMMEDIATE = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}


@pytest.fixture
def inline(settings) -> None:
    """Tasks run as they are enqueued, on the calling thread (no worker process needed)."""
    settings.TASKS = IMMEDIATE
    settings.TRACKER_RECONCILE_THREADS = 1
    settings.TRACKER_RECONCILE_BATCH = 3


def silent(card_id: str, stage: str = "CARD_PROD_READY", **fields: Any) -> CardOrder:
    """An order Tracker last heard of long ago, so it is past its stage's threshold."""
    long_ago = timezone.now() - timedelta(days=10)
    ingest.apply(ISSUER, op(stage, cardId=card_id), Source.NOTIFICATION, received_at=long_ago)
    order = CardOrder.objects.get(issuer_id=ISSUER, card_id=card_id)
    assert order.silent_after < timezone.now() or order.terminal
    if fields:
        CardOrder.objects.filter(pk=order.pk).update(**fields)
        order.refresh_from_db()
    return order


def polled(d1, since: int = 0) -> Counter:
    """How many productionStatus calls the sandbox received per card."""
    return Counter(
        request["path"].split("/")[-2]
        for request in d1.requests(since)
        if request["path"].endswith(STATUS_PATH)
    )


def run(*args: str) -> tuple[int, str, str]:
    return run_command("reconcile", *args)


# --- What the sweep repairs ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sweep_repairs_exactly_the_cards_whose_notifications_were_lost(
    d1, live_server, inline, caplog
):
    d1.configure(
        notify_url=live_server.url,
        notify_drop_share=0.3,
        notify_duplicate_share=0,
        notify_reorder_share=0,
        notify_retry_base=0.01,
    )
    d1.seed(
        *[
            card(f"crd-drop-{n:02d}", stage=OPEN_STAGES[n % 4], lifecycle=False, notify=True)
            for n in range(24)
        ]
    )
    assert d1.flush(timeout=20)["pending"] == 0
    drain()  # answered 204, then applied by the applier
    outcome = {(e["cardId"], e["status"]): e["outcome"] for e in d1.notifications()}
    current = {
        f"crd-drop-{n:02d}": d1.card(ISSUER, f"crd-drop-{n:02d}")["current"]["details"]["status"]
        for n in range(24)
    }
    known = set(CardOrder.objects.values_list("card_id", flat=True))
    # Behind: Tracker heard of the card, but the notification of its latest stage was lost.
    behind = {card_id for card_id in known if outcome[card_id, current[card_id]] == "dropped"}
    assert 0 < len(behind) < len(known), "the seed should leave some cards behind, not all"
    for order in CardOrder.objects.all():
        assert (order.stage != current[order.card_id]) == (order.card_id in behind)
    # Tracker last heard of them long ago: every one is past its stage's threshold.
    CardOrder.objects.update(silent_after=timezone.now() - timedelta(hours=1))

    with caplog.at_level(logging.WARNING, logger="tracker.repair"):
        record = sweep.run()

    assert (record.checked, record.repaired, record.failed, record.stop_reason) == (
        len(known),
        len(behind),
        0,
        "",
    )
    repaired = set(
        TimelineEvent.objects.filter(source=Source.RECONCILE).values_list(
            "order__card_id", flat=True
        )
    )
    assert repaired == behind
    for order in CardOrder.objects.all():
        assert order.stage == current[order.card_id] and order.last_checked_at is not None
    assert set(polled(d1).elements()) == known and max(polled(d1).values()) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "tracker.repair"]
    assert len(lines) == len(behind)
    some = sorted(behind)[0]
    line = next(line for line in lines if f"{ISSUER}/{some}," in line)
    assert "stage " in line and "→" in line
    assert not SweepClaim.objects.exists()


@pytest.mark.django_db
def test_late_orders_come_first_then_the_longest_overdue(d1):
    now = timezone.now()
    silent("crd-recent", silent_after=now - timedelta(hours=1))
    silent("crd-oldest", silent_after=now - timedelta(days=3))
    silent("crd-late", silent_after=now - timedelta(minutes=5), late_after=now - timedelta(days=1))
    silent("crd-not-yet", silent_after=now + timedelta(hours=1))
    order = list(sweep.candidates(now).values_list("card_id", flat=True))
    assert order == ["crd-late", "crd-oldest", "crd-recent"]


@pytest.mark.django_db
def test_terminal_orders_are_never_polled_and_unknown_ones_not_again(d1, inline, settings):
    settings.TRACKER_RECONCILE_RECHECK_AFTER = 1  # a second: only the 404 flag holds it back
    d1.seed(card("crd-known", stage="CARD_PROD_ONGOING"), card("crd-shipped", stage="CARD_SHIPPED"))
    silent("crd-known", "CARD_PROD_ONGOING")
    shipped = silent("crd-shipped", "CARD_SHIPPED", silent_after=timezone.now() - timedelta(days=1))
    assert shipped.terminal
    silent("crd-unknown")

    first = sweep.run()

    assert (first.checked, first.not_found, first.failed) == (2, 1, 0)
    assert polled(d1) == {"crd-known": 1, "crd-unknown": 1}
    unknown = CardOrder.objects.get(card_id="crd-unknown")
    assert unknown.unknown_to_d1

    time.sleep(1.1)
    CardOrder.objects.update(silent_after=timezone.now() - timedelta(hours=1))
    seen = d1.requests()[-1]["seq"]
    second = sweep.run()
    assert polled(d1, seen) == {"crd-known": 1}
    assert (second.checked, second.not_found) == (1, 0)

    # News of the card after D1's 404: worth asking again once it falls silent.
    ingest.apply(ISSUER, op("DATA_PREPARED", cardId="crd-unknown"), Source.NOTIFICATION)
    CardOrder.objects.filter(card_id="crd-unknown").update(
        silent_after=timezone.now() - timedelta(hours=1)
    )
    assert "crd-unknown" in set(sweep.candidates(timezone.now()).values_list("card_id", flat=True))


@pytest.mark.django_db
def test_a_card_d1_just_confirmed_is_not_asked_again_within_the_recheck_interval(d1, inline):
    d1.seed(card("crd-a", stage="CARD_PROD_READY"), card("crd-b", stage="CARD_PROD_READY"))
    silent("crd-a")
    silent("crd-b")
    assert sweep.run().checked == 2
    CardOrder.objects.update(silent_after=timezone.now() - timedelta(hours=1))
    again = sweep.run()
    assert (again.checked, again.stop_reason) == (0, "")
    assert polled(d1) == {"crd-a": 1, "crd-b": 1}


@pytest.mark.django_db
def test_limit_and_issuer_bound_the_sweep(d1, inline, settings):
    settings.D1_ISSUER_IDS = [ISSUER, "ISS0000002"]
    for n in range(5):
        d1.seed(card(f"crd-{n}", stage="CARD_PROD_READY"))
        silent(f"crd-{n}")
    other = silent("crd-other")
    CardOrder.objects.filter(pk=other.pk).update(issuer_id="ISS0000002")

    limited = sweep.run(limit=2)
    assert (limited.queued, limited.checked, limited.limit) == (2, 2, 2)
    only = sweep.run(issuer_id=ISSUER)
    assert (only.checked, only.issuer_id) == (3, ISSUER)
    assert "crd-other" not in polled(d1)


# --- Stopping early -------------------------------------------------------------------------


@pytest.mark.cache
@pytest.mark.django_db
def test_the_breaker_stops_the_sweep_and_the_next_run_resumes(d1, inline, settings):
    settings.D1_BACKGROUND_RETRIES = 0
    settings.D1_BREAKER_THRESHOLD = 2
    settings.TRACKER_RECONCILE_BATCH = 2
    for n in range(10):
        d1.seed(card(f"crd-{n}", stage="CARD_PROD_ONGOING"))
        silent(f"crd-{n}")
    d1.set_faults(rates={"503": 1.0})

    first = sweep.run()

    assert first.stop_reason == Sweep.Stop.BREAKER
    assert "breaker open" in first.stop_detail
    assert (first.checked, first.failed, first.skipped, first.queued) == (0, 2, 8, 10)
    assert sum(polled(d1).values()) == 2  # no call once the breaker opened
    assert not SweepClaim.objects.exists()  # the cards are free for the next run
    assert sweep.run().stop_reason == Sweep.Stop.BREAKER  # still open: stops at once

    d1.set_faults()  # D1 is back; the cool-down is over, a probe closes the breaker
    settings.D1_BREAKER_COOLDOWN = 0
    second = sweep.run()
    assert (second.checked, second.failed, second.stop_reason) == (10, 0, "")
    assert breaker.state()["state"] == "closed"


@pytest.mark.django_db
def test_a_sweep_without_workers_stops_as_stalled(d1, settings):
    settings.TRACKER_RECONCILE_STALL_TIMEOUT = 0.5  # the default backend: nobody runs the tasks
    d1.seed(card("crd-1", stage="CARD_PROD_READY"))
    silent("crd-1")
    record = sweep.run()
    assert record.stop_reason == Sweep.Stop.STALLED
    assert "db_worker" in record.stop_detail
    assert not SweepClaim.objects.exists()
    assert DBTaskResult.objects.count() == 1  # left queued: it skips the released card later


@pytest.mark.django_db
def test_a_stop_request_interrupts_the_sweep(d1, settings):
    settings.TRACKER_RECONCILE_STALL_TIMEOUT = 60
    silent("crd-1")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    record = sweep.run(stop=stop)
    assert record.stop_reason == Sweep.Stop.INTERRUPTED


# --- Claims -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cards_another_running_sweep_holds_are_left_to_it(d1, inline):
    for n in range(4):
        d1.seed(card(f"crd-{n}", stage="CARD_PROD_READY"))
        silent(f"crd-{n}")
    running = Sweep.objects.create()
    held = CardOrder.objects.filter(card_id__in=["crd-0", "crd-1"])
    SweepClaim.objects.bulk_create([SweepClaim(order=order, sweep=running) for order in held])

    record = sweep.run()
    assert record.checked == 2
    assert set(polled(d1)) == {"crd-2", "crd-3"}
    assert SweepClaim.objects.filter(sweep=running).count() == 2  # not ours to release


@pytest.mark.django_db
def test_the_claims_of_a_sweep_that_died_lapse(d1, inline, settings):
    d1.seed(card("crd-0", stage="CARD_PROD_READY"))
    silent("crd-0")
    dead = Sweep.objects.create(heartbeat_at=timezone.now() - timedelta(hours=1))
    SweepClaim.objects.create(order=CardOrder.objects.get(), sweep=dead)

    record = sweep.run()
    assert record.checked == 1
    dead.refresh_from_db()
    assert dead.stop_reason == Sweep.Stop.LOST and dead.finished_at is not None


@pytest.mark.django_db(transaction=True)  # between sweeps the loop recycles old connections
def test_every_duration_runs_sweeps_until_stopped(d1, inline):
    stop = threading.Event()
    records = []
    for record in sweep.run_every(0.05, stop):
        records.append(record)
        if len(records) == 2:
            stop.set()
    assert len(records) == 2 and all(r.finished_at for r in records)


# --- The command --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2d", 172800)]
)
def test_durations_read_like_an_operator_writes_them(text, seconds):
    assert env.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 min", "1.5h", "0s", "-5m", "m"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(ValueError):
        env.parse_duration(text)


def test_a_bad_duration_setting_stops_start_up(monkeypatch):
    monkeypatch.setenv("TRACKER_RECONCILE_WAVE", "ten seconds")
    with pytest.raises(ImproperlyConfigured, match="TRACKER_RECONCILE_WAVE"):
        env.duration("TRACKER_RECONCILE_WAVE", "10s")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "soon"], "is not a duration like 90s, 5m or 1h"),
        (["--every", "0m"], "longer than zero"),
        (["--once", "--every", "5m"], "not allowed with argument"),
        (["--issuer", "ISS"], "is not a 10-character D1 issuerId"),
        (["--limit", "0"], "at least 1"),
        (["--limit", "many"], "at least 1"),
    ],
)
def test_the_command_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("reconcile", *args)


@pytest.mark.django_db
def test_reconcile_once_prints_what_it_did(d1, inline):
    same = make_operation("CARD_PROD_READY", cardId="crd-2")  # exactly what Tracker holds
    d1.seed(card("crd-1", stage="CARD_SHIPPED"), card("crd-2", operations=[same], lifecycle=False))
    silent("crd-1")
    silent("crd-2")
    code, out, err = run("--once", "--limit", "5", "--issuer", ISSUER)
    assert code == 0 and err == ""
    assert "1 repaired" in out and "2 checked" in out and "0 failed" in out


@pytest.mark.django_db
def test_reconcile_exits_2_when_d1_is_unavailable(d1, inline, settings):
    settings.D1_BACKGROUND_RETRIES = 0
    settings.D1_BREAKER_THRESHOLD = 1
    silent("crd-1")
    d1.seed(card("crd-1", stage="CARD_PROD_READY"))
    d1.set_faults(rates={"503": 1.0})
    code, out, err = run()
    assert code == 2
    assert "stopped early (D1 unavailable (circuit breaker open))" in err


# --- The drift report -----------------------------------------------------------------------


@pytest.fixture
def supervisor_client(client, db):
    user = staff(roles.SUPERVISORS, "sup-drift")
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_queue_page_shows_the_last_sweeps_and_warns_of_repairs(supervisor_client):
    now = timezone.now()
    Sweep.objects.create(started_at=now - timedelta(hours=2), finished_at=now, checked=40)
    Sweep.objects.create(
        started_at=now - timedelta(hours=1),
        finished_at=now,
        checked=12,
        repaired=3,
        failed=1,
        not_found=2,
    )
    page = supervisor_client.get("/stuck/").content.decode()
    assert 'id="drift-report"' in page
    assert "3 orders were behind D1: notifications may be getting lost." in page
    assert "2 unknown to D1" in page and '<td class="number">40</td>' in page

    Sweep.objects.create(started_at=now, finished_at=now, checked=5, stop_reason="breaker")
    page = supervisor_client.get("/stuck/").content.decode()
    assert "notifications may be getting lost" not in page
    assert "stopped early: D1 unavailable (circuit breaker open)" in page


@pytest.mark.django_db
def test_the_queue_page_says_when_no_sweep_has_run(supervisor_client):
    page = supervisor_client.get("/stuck/").content.decode()
    assert "No reconciliation sweep has run yet." in page
    table = supervisor_client.get(
        "/stuck/", headers={"HX-Request": "true", "HX-Target": "queue-table"}
    )
    assert "drift-report" not in table.content.decode()


@pytest.mark.django_db
def test_the_drift_report_is_in_japanese_too(supervisor_client):
    Sweep.objects.create(finished_at=timezone.now(), checked=3, repaired=1)
    page = supervisor_client.get("/stuck/", headers={"Accept-Language": "ja"}).content.decode()
    assert "D1 との照合" in page and "通知が失われている可能性があります" in page


@pytest.mark.django_db
def test_healthz_shows_the_last_sweep(client):
    assert client.get("/healthz").json()["reconcile"] == {"lastSweep": None}
    started = timezone.now() - timedelta(minutes=3)
    Sweep.objects.create(started_at=started - timedelta(hours=1), finished_at=started)
    Sweep.objects.create(
        started_at=started,
        finished_at=started + timedelta(seconds=90),
        checked=100,
        repaired=4,
        not_found=1,
        failed=2,
        stop_reason=Sweep.Stop.BREAKER,
    )
    last = client.get("/healthz").json()["reconcile"]["lastSweep"]
    assert last == {
        "startedAt": serialize.instant(started),
        "finishedAt": serialize.instant(started + timedelta(seconds=90)),
        "issuerId": None,
        "checked": 100,
        "repaired": 4,
        "notFound": 1,
        "failed": 2,
        "stoppedEarly": "breaker",
    }


@pytest.mark.django_db
def test_sweeps_are_read_only_in_the_admin_site(client):
    admin = staff(roles.ADMINISTRATORS, "adm-drift")
    client.force_login(admin)
    record = Sweep.objects.create(finished_at=timezone.now(), checked=7, repaired=1)
    assert client.get("/admin/tracker/sweep/").status_code == 200
    assert client.get("/admin/tracker/sweep/add/").status_code == 403
    detail = client.get(f"/admin/tracker/sweep/{record.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert client.post(f"/admin/tracker/sweep/{record.pk}/delete/").status_code == 403


# --- Through real workers (PostgreSQL: other processes open the test database) -------------


def manage(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def workers():
    """Start `count` db_worker processes with start(env, count); stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(env: dict[str, str], count: int = 2) -> list[subprocess.Popen]:
        worker = ("db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.1")
        started.extend(manage(env, *worker) for _ in range(count))
        return started

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def finished(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.mark.cache
@pytest.mark.django_db(transaction=True)
def test_two_workers_keep_to_the_rate_budget_in_every_second(
    d1, d1_key, sandbox, database_url, workers
):
    rate, cards = 20, 60
    d1.set_faults(latency_ms=20)
    for n in range(cards):
        d1.seed(card(f"crd-w-{n:03d}", stage="CARD_PROD_ONGOING", lifecycle=False))
        silent(f"crd-w-{n:03d}")
    env = worker_env(
        database_url,
        sandbox,
        d1_key,
        D1_MAX_RPS=str(rate),
        TRACKER_RECONCILE_THREADS="4",
        TRACKER_RECONCILE_BATCH="5",
        TRACKER_RECONCILE_WAVE="2s",
    )
    workers(env, 2)

    code, out, err = finished(manage(env, "reconcile", "--once"))

    assert code == 0, err[-3000:]
    record = Sweep.objects.get()
    assert (record.checked, record.repaired, record.failed, record.stop_reason) == (
        cards,
        cards,
        0,
        "",
    )
    assert f"{cards} checked, {cards} repaired" in out
    calls = d1.requests()
    assert sorted(polled(d1).values()) == [1] * cards
    # Every D1 call counts, the token request included.
    moments = sorted(call["at"] for call in calls)
    assert busiest_second(moments) <= rate
    assert moments[-1] - moments[0] >= (cards - 1) / rate * 0.9
    # Both workers took batches: the budget held across processes, not within one.
    ran = DBTaskResult.objects.filter(task_path="tracker.tasks.refresh_cards")
    assert len({worker for task in ran for worker in task.worker_ids}) == 2


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_never_check_a_card_twice(d1, d1_key, sandbox, database_url, workers):
    cards = 40
    for n in range(cards):
        d1.seed(card(f"crd-s-{n:03d}", stage="CARD_PROD_READY", lifecycle=False))
        silent(f"crd-s-{n:03d}")
    env = worker_env(
        database_url,
        sandbox,
        d1_key,
        D1_MAX_RPS="20",
        TRACKER_RECONCILE_THREADS="2",
        TRACKER_RECONCILE_BATCH="4",
        TRACKER_RECONCILE_WAVE="1s",
    )
    workers(env, 2)

    sweeps = [manage(env, "reconcile", "--once") for _ in range(2)]
    results = [finished(process) for process in sweeps]

    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    records = list(Sweep.objects.all())
    assert len(records) == 2
    assert sum(record.checked for record in records) == cards
    assert sum(record.queued for record in records) == cards
    assert sorted(polled(d1).values()) == [1] * cards
    assert not SweepClaim.objects.exists()


@pytest.mark.django_db
def test_every_open_order_is_a_candidate_when_asked_not_only_silent_ones():
    from tests.conftest import make_order

    now = timezone.now()
    silent = make_order(card_id="crd-all-1", silent_after=now - timedelta(hours=1))
    quiet = make_order(card_id="crd-all-2", silent_after=now + timedelta(hours=3))
    make_order(card_id="crd-all-3", terminal=True)
    assert list(sweep.candidates(now)) == [silent]
    assert set(sweep.candidates(now, every_open=True)) == {silent, quiet}

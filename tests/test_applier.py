"""The applier: bodies answered 204 are applied in batches, by several processes, and survive a
killed applier (tracker/applier.py, `manage.py apply_notifications`)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import DataError, connection, connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import NOTIFY_URL, drain, make_operation, run_command, staff, storm_senders
from tests.test_ingest import (
    LIFECYCLE,
    _in_order_state,
    _lifecycle,
    _state,
    shuffled_with_duplicates,
)
from tracker import applier, roles, transactions
from tracker.models import CardOrder, InboxItem, Outcome, TimelineEvent

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parent.parent


def post(client, bearer, operations: list[dict]) -> int:
    body = json.dumps({"operations": operations}).encode()
    return client.post(
        NOTIFY_URL, body, content_type="application/json", headers=bearer
    ).status_code


def pending() -> int:
    return InboxItem.objects.filter(outcome=InboxItem.Outcome.RECEIVED).count()


# --- Convergence ---------------------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_shuffle_of_a_duplicated_lifecycle_posted_and_applied_in_batches_converges(
    client, bearer, data
):
    CardOrder.objects.all().delete()
    InboxItem.objects.all().delete()
    cards = ["crd-prop-a", "crd-prop-b"]
    deliveries = shuffled_with_duplicates(data, cards)
    per_post = data.draw(st.integers(min_value=1, max_value=4), label="operations per POST")
    per_batch = data.draw(st.integers(min_value=1, max_value=6), label="bodies per batch")
    for start in range(0, len(deliveries), per_post):
        assert post(client, bearer, deliveries[start : start + per_post]) == 204
    assert CardOrder.objects.count() == 0  # answered, not applied yet
    while applier.apply_pending(limit=per_batch):
        pass
    assert pending() == 0
    for card_id in cards:
        received = [item for item in deliveries if item["cardId"] == card_id]
        order = CardOrder.objects.get(card_id=card_id)
        assert _state(card_id) == _in_order_state(card_id)
        assert order.events.count() == len(LIFECYCLE)
        assert order.duplicates_received == len(received) - len(LIFECYCLE)


def test_operations_of_one_batch_are_counted_on_their_own_bodies(client, bearer):
    shipped = _lifecycle("crd-count")
    assert post(client, bearer, shipped[:3]) == 204
    assert post(client, bearer, shipped[:2] + shipped[3:]) == 204
    assert applier.apply_pending() == 2
    first, second = InboxItem.objects.order_by("pk")
    assert (first.applied, first.duplicate) == (3, 0)
    assert (second.applied, second.duplicate) == (3, 2)
    assert {e.inbox_id for e in TimelineEvent.objects.all()} == {first.pk, second.pk}


def test_a_body_that_fails_on_its_own_is_marked_failed_and_the_batch_goes_on(client, bearer):
    def refuse_the_poison(execute, sql, params, many, context):
        if 'INSERT INTO "tracker_cardorder"' in sql and "crd-poison" in str(params):
            raise DataError("value out of range")
        return execute(sql, params, many, context)

    for card_id in ("crd-good-1", "crd-poison", "crd-good-2"):
        assert post(client, bearer, [make_operation(cardId=card_id)]) == 204
    with connection.execute_wrapper(refuse_the_poison):
        assert applier.drain() == 3
    outcomes = dict(InboxItem.objects.values_list("results__0__cardId", "outcome"))
    failed = InboxItem.objects.get(outcome=InboxItem.Outcome.FAILED)
    assert "value out of range" in failed.error
    assert sorted(
        CardOrder.objects.filter(events__isnull=False).values_list("card_id", flat=True)
    ) == [
        "crd-good-1",
        "crd-good-2",
    ]
    assert outcomes.get("crd-good-1") == InboxItem.Outcome.PROCESSED


def test_inline_mode_applies_right_after_the_answer(client, bearer, settings):
    settings.TRACKER_APPLY_INLINE = True
    assert post(client, bearer, [make_operation("DATA_PREPARED", cardId="crd-inline")]) == 204
    assert CardOrder.objects.get(card_id="crd-inline").stage == "DATA_PREPARED"
    assert pending() == 0


def test_the_command_applies_what_is_pending_once(client, bearer):
    assert post(client, bearer, [make_operation(cardId="crd-cmd")]) == 204
    code, out, _ = run_command("apply_notifications", "--once")
    assert (code, out.strip()) == (0, "1 notification bodies applied.")
    assert CardOrder.objects.filter(card_id="crd-cmd").exists()


# --- Apply lag ------------------------------------------------------------------------------


def test_apply_lag_shows_on_healthz_and_makes_it_not_ready(client, bearer, settings):
    settings.TRACKER_APPLY_LAG_LIMIT = 60
    assert post(client, bearer, [make_operation(cardId="crd-lag")]) == 204
    InboxItem.objects.update(received_at=timezone.now() - timedelta(seconds=90))
    health = client.get("/healthz")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "failing"
    assert body["failing"] == ["apply_lag"]
    assert body["applier"]["pending"] == 1
    assert body["applier"]["lagSeconds"] >= 90
    assert body["applier"]["ready"] is False

    drain()
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["applier"] == {
        "pending": 0,
        "lagSeconds": 0.0,
        "oldestPendingAt": None,
        "ready": True,
    }


def test_apply_lag_shows_on_the_delivery_page(client, bearer):
    assert post(client, bearer, [make_operation(cardId="crd-lag-page")]) == 204
    client.force_login(staff(roles.SUPERVISORS))
    page = client.get("/delivery/").content.decode()
    assert 'id="apply-lag"' in page
    assert "1 notification waiting to be applied" in page


# --- Several appliers, on PostgreSQL --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_appliers_and_a_storm_of_senders_end_right_without_deadlock_retries(
    live_server, bearer, on_postgres
):
    cards = [f"crd-storm-{n}" for n in range(8)]
    deliveries = [item for card_id in cards for item in _lifecycle(card_id) * 2]
    senders = 6
    threads, storm = storm_senders(live_server.url, bearer, deliveries, list(range(senders)), 5)
    errors = storm.errors
    stop = threading.Event()
    retries_before = transactions.retries.count

    def apply() -> None:
        try:
            applier.run(stop.is_set, poll=0.05)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)
        finally:
            connection.close()

    appliers = [threading.Thread(target=apply) for _ in range(2)]
    for thread in appliers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 60
    while pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for thread in appliers:
        thread.join()
    assert errors == []
    assert set(storm.answers) == {204}
    assert pending() == 0
    assert transactions.retries.count == retries_before  # no deadlock, nothing ran twice
    for card_id in cards:
        order = CardOrder.objects.get(card_id=card_id)
        assert _state(card_id) == _in_order_state(card_id)
        assert order.events.count() == len(LIFECYCLE)
        assert order.duplicates_received == senders * 2 * len(LIFECYCLE) - len(LIFECYCLE)


@pytest.mark.django_db(transaction=True)
def test_an_applier_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    client, bearer, on_postgres
):
    cards = [f"crd-kill-{n}" for n in range(5)]
    for card_id in cards:
        assert post(client, bearer, _lifecycle(card_id)[:2]) == 204
    drain()
    for card_id in cards:
        assert post(client, bearer, _lifecycle(card_id)[1:]) == 204  # one duplicate each
    holder = connections.create_connection("default")
    try:
        with holder.cursor() as cursor:
            # Hold the last card: the applier takes the bodies, then waits mid-batch.
            cursor.execute("BEGIN")
            cursor.execute(
                "SELECT id FROM tracker_cardorder WHERE card_id = %s FOR UPDATE", [cards[-1]]
            )
            child = _start_applier()
            try:
                _wait_for_a_lock_wait(child)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(10)
            cursor.execute("ROLLBACK")
    finally:
        holder.close()
    # The killed applier's transaction dies with its connection: its bodies come back.
    deadline = time.monotonic() + 30
    while pending() and time.monotonic() < deadline:
        drain()
        time.sleep(0.1)
    assert pending() == 0
    assert not InboxItem.objects.exclude(outcome=InboxItem.Outcome.PROCESSED).exists()
    for card_id in cards:
        order = CardOrder.objects.get(card_id=card_id)
        assert _state(card_id) == _in_order_state(card_id)
        assert order.events.count() == len(LIFECYCLE)
        assert order.duplicates_received == 1
    totals = [sum(InboxItem.objects.values_list(o.value, flat=True)) for o in Outcome]
    counted = dict(zip([o.value for o in Outcome], totals, strict=True))
    assert counted["applied"] + counted["stale"] == len(cards) * len(LIFECYCLE)
    assert counted["duplicate"] == len(cards)


def _start_applier() -> subprocess.Popen:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tracker.settings",
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": url,
        "DATABASE_LOCK_TIMEOUT_MS": "0",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "apply_notifications", "--poll", "0.1"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_a_lock_wait(child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
                " AND query LIKE 'INSERT INTO \"tracker_cardorder\"%%'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"the applier never reached the held card (exit {child.poll()})")

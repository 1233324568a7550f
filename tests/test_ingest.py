import json
import random
import threading
from datetime import UTC, date, datetime

import pytest
from django.db import connection
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ISSUER, delivered, example, example_operations, op, stored_item
from tracker import inbox, ingest
from tracker.d1.schema import Operation, parse_operation
from tracker.models import CardOrder, InboxItem, Outcome, Source, TimelineEvent

pytestmark = pytest.mark.django_db

CARD = "crd-ev-2025-000731"


def apply_example(name: str, source: Source = Source.NOTIFICATION) -> list[ingest.Result]:
    return ingest.apply_many(delivered(example_operations(name)), source)


def order(card_id: str = CARD) -> CardOrder:
    return CardOrder.objects.get(issuer_id=ISSUER, card_id=card_id)


def test_the_shared_examples_in_order_give_the_states_their_readme_describes():
    apply_example("01", Source.ON_DEMAND)
    requested = order()
    assert (requested.stage, requested.operation_status) == ("CARD_PROD_REQUESTED", "PENDING")
    assert requested.issuer_request_id == "ord-20250304-00412"

    apply_example("02")
    prepared = order()
    assert prepared.stage == "DATA_PREPARED"
    assert (prepared.due_date, prepared.production_site) == (date(2025, 3, 5), "PC-FR-GEM-01")

    apply_example("03")
    rejected = order("crd-ev-2025-000744")
    assert (rejected.stage, rejected.operation_status, rejected.terminal) == (
        "DATA_EXCEPTION",
        "FAILED",
        True,
    )
    assert (rejected.error_code, rejected.error) == ("FIELD_INVALID_VALUE", "embossing.line2")
    assert "21 characters" in rejected.reason and rejected.end_time is not None

    for name, stage in (
        ("04", "CARD_PROD_READY"),
        ("05", "CARD_PROD_ONGOING"),
        ("06", "CARD_PROD_DONE"),
    ):
        apply_example(name)
        assert order().stage == stage and not order().terminal

    apply_example("07")
    shipped = order()
    assert (shipped.stage, shipped.operation_status, shipped.terminal) == (
        "CARD_SHIPPED",
        "SUCCESSFUL",
        True,
    )
    assert shipped.end_time == datetime(2025, 3, 5, 15, 52, 9, 447000, tzinfo=UTC)
    assert (shipped.carrier, shipped.tracking_number, shipped.shipment_status) == (
        "la-poste-colissimo",
        "6A21458873310",
        "InfoReceived",
    )

    apply_example("08")
    assert order().shipment_status == "InTransit"
    assert order().shipment_message == "Parcel sorted at regional hub."

    apply_example("09")
    canceled = order("crd-ev-2025-000702")
    assert (canceled.stage, canceled.terminal) == ("CARD_PROD_CANCELED", True)
    assert canceled.reason.startswith("Order pulled by issuer")

    results = apply_example("10")
    assert [r.verdict for r in results] == ["applied"] * 4
    assert order("crd-br-2025-110201").input_file_name == "CI_ISS7K2M40Q_20250306_01.json"
    assert order("crd-br-2025-110203").error_code == "CRYPTO_ERROR"
    assert order("crd-br-2025-110187").carrier == "dhl"

    [unknown] = apply_example("11")
    assert unknown.verdict == Outcome.UNRECOGNIZED
    flagged = order()
    assert (flagged.stage, flagged.unrecognized_status) == (
        "CARD_SHIPPED",
        "CARD_PROD_QUALITY_REVIEW",
    )
    assert flagged.reason == ""  # the unknown status's reason does not become the order's

    apply_example("12", Source.ON_DEMAND)
    delivered = order()
    assert (delivered.shipment_status, delivered.unrecognized_status) == ("Delivered", "")

    apply_example("14")
    returned = order("crd-ext-2025-009914")
    assert (returned.stage, returned.operation, returned.tracking_type) == (
        "CARD_RETURNED",
        "STANDALONE_TRACKING",
        "RETURN",
    )
    assert returned.terminal

    history = list(order().events.order_by("received_at", "id").values_list("status", "verdict"))
    assert [status for status, _ in history] == [
        "CARD_PROD_REQUESTED",
        "DATA_PREPARED",
        "CARD_PROD_READY",
        "CARD_PROD_ONGOING",
        "CARD_PROD_DONE",
        "CARD_SHIPPED",
        "CARD_SHIPPED",
        "CARD_PROD_QUALITY_REVIEW",
        "CARD_SHIPPED",
    ]


def test_a_duplicate_is_counted_and_changes_nothing_else():
    apply_example("07")
    before = order()
    reordered = json.loads(
        json.dumps(example("07")["operations"][0]), object_pairs_hook=lambda p: dict(reversed(p))
    )
    result = ingest.apply(ISSUER, parse_operation(reordered), Source.NOTIFICATION)
    after = order()
    assert result.verdict == ingest.Outcome.DUPLICATE and not result.changed
    assert after.duplicates_received == 1
    assert after.events.count() == 1
    assert after.last_event_at == before.last_event_at


def test_a_late_lower_ranked_event_is_kept_as_stale_and_the_stage_never_moves_back():
    apply_example("06")
    [result] = apply_example("04")
    assert result.verdict == Outcome.STALE and not result.changed
    assert order().stage == "CARD_PROD_DONE"
    assert order().events.filter(verdict=Outcome.STALE, status="CARD_PROD_READY").exists()


def test_a_stale_event_fills_in_what_the_order_lacks_but_overwrites_nothing():
    ingest.apply(
        ISSUER, op("CARD_PROD_DONE", details__productionSite="SITE-B"), Source.NOTIFICATION
    )
    ingest.apply(
        ISSUER,
        op("DATA_PREPARED", issuerRequestId="req-9", details__productionSite="SITE-A"),
        Source.NOTIFICATION,
    )
    filled = CardOrder.objects.get()
    assert (filled.stage, filled.issuer_request_id, filled.production_site) == (
        "CARD_PROD_DONE",
        "req-9",
        "SITE-B",
    )


def test_an_exception_after_shipment_is_a_conflict_that_keeps_the_first_terminal_state():
    apply_example("07")
    exception = op(
        "DATA_EXCEPTION",
        cardId=CARD,
        operationId="9f3b6c2e-5d1a-4c7b-8e2f-a41d7c0b5e11",
        startTime="2025-03-04T08:41:12.305Z",
        status="FAILED",
    )
    result = ingest.apply(ISSUER, exception, Source.NOTIFICATION)
    conflicted = order()
    assert result.verdict == Outcome.CONFLICT and result.changed
    assert (conflicted.stage, conflicted.conflict) == ("CARD_SHIPPED", True)


def test_a_shipment_after_a_cancellation_is_a_conflict():
    ingest.apply(ISSUER, op("CARD_PROD_CANCELED", status="FAILED"), Source.NOTIFICATION)
    result = ingest.apply(ISSUER, op("CARD_SHIPPED", status="SUCCESSFUL"), Source.NOTIFICATION)
    assert result.verdict == Outcome.CONFLICT
    assert (CardOrder.objects.get().stage, CardOrder.objects.get().conflict) == (
        "CARD_PROD_CANCELED",
        True,
    )


def test_an_unknown_status_is_stored_flagged_and_cleared_by_a_later_known_one():
    ingest.apply(ISSUER, op("CARD_PROD_ONGOING"), Source.NOTIFICATION)
    held = ingest.apply(ISSUER, op("CARD_PROD_ON_HOLD"), Source.NOTIFICATION)
    flagged = CardOrder.objects.get()
    assert held.verdict == Outcome.UNRECOGNIZED and held.changed
    assert (flagged.stage, flagged.unrecognized_status) == (
        "CARD_PROD_ONGOING",
        "CARD_PROD_ON_HOLD",
    )
    stale = ingest.apply(ISSUER, op("CARD_PROD_READY"), Source.NOTIFICATION)
    assert stale.verdict == Outcome.STALE
    assert CardOrder.objects.get().unrecognized_status == "CARD_PROD_ON_HOLD"
    ingest.apply(ISSUER, op("CARD_PROD_DONE"), Source.NOTIFICATION)
    assert CardOrder.objects.get().unrecognized_status == ""
    assert TimelineEvent.objects.filter(status="CARD_PROD_ON_HOLD", verdict="unrecognized").exists()


@override_settings(D1_UNKNOWN_STATUS_POLICY="store")
def test_the_store_policy_keeps_unknown_statuses_without_flagging_the_order():
    result = ingest.apply(ISSUER, op("CARD_PROD_ON_HOLD"), Source.NOTIFICATION)
    assert result.verdict == Outcome.UNRECOGNIZED
    assert CardOrder.objects.get().unrecognized_status == ""


def test_operations_other_than_card_tracking_are_skipped():
    [result] = ingest.apply_many(
        delivered([op("ACTIVE", operation="ACTIVATE")]), Source.NOTIFICATION
    )
    assert result == ingest.Result(ingest.Outcome.IGNORED, None, False)
    assert not CardOrder.objects.exists()


def test_an_operation_is_kept_as_sent_with_what_a_fast_json_writer_cannot_write():
    # Keys D1 may add tomorrow, with an integer beyond 64 bits, a non-ASCII text and a float:
    # the timeline keeps them as they came, on either database.
    extra = {"serial": 10**30, "label": "カード ✓", "weight": 12.5}
    first, second = ingest.apply_many(
        delivered([op(cardId=CARD, extension=extra), op("CARD_PROD_READY", cardId="crd-2")]),
        Source.NOTIFICATION,
    )
    assert first.verdict == second.verdict == Outcome.APPLIED
    event = TimelineEvent.objects.get(order__card_id=CARD)
    assert event.raw["extension"] == extra
    assert event.start_time == order().start_time and event.received_at is not None
    assert TimelineEvent.objects.get(order__card_id="crd-2").status == "CARD_PROD_READY"


def test_a_re_order_with_a_new_operation_starts_the_order_afresh():
    ingest.apply(ISSUER, op("DATA_EXCEPTION", status="FAILED", errorCode="X"), Source.NOTIFICATION)
    reorder = op("CARD_PROD_REQUESTED", operationId="op-0002", startTime="2025-03-10T09:00:00Z")
    assert ingest.apply(ISSUER, reorder, Source.NOTIFICATION).verdict == Outcome.APPLIED
    fresh = CardOrder.objects.get()
    assert (fresh.operation_id, fresh.stage, fresh.terminal, fresh.error_code) == (
        "op-0002",
        "CARD_PROD_REQUESTED",
        False,
        "",
    )
    late_old = op("CARD_PROD_DONE", operationId="op-0001")
    assert ingest.apply(ISSUER, late_old, Source.NOTIFICATION).verdict == Outcome.STALE
    assert CardOrder.objects.get().stage == "CARD_PROD_REQUESTED"


@override_settings(D1_PROD_EXCEPTION_TERMINAL=False)
def test_a_recoverable_production_exception_is_superseded_by_production_done():
    ingest.apply(ISSUER, op("CARD_PROD_EXCEPTION"), Source.NOTIFICATION)
    assert not CardOrder.objects.get().terminal
    ingest.apply(ISSUER, op("CARD_PROD_DONE"), Source.NOTIFICATION)
    assert CardOrder.objects.get().stage == "CARD_PROD_DONE"


@override_settings(D1_DEDUP_KEY_MODE="state_tuple")
def test_the_state_tuple_key_treats_a_changed_due_date_as_a_duplicate():
    ingest.apply(ISSUER, op("DATA_PREPARED", details__dueDate="2025-03-05"), Source.NOTIFICATION)
    again = ingest.apply(
        ISSUER, op("DATA_PREPARED", details__dueDate="2025-03-06"), Source.NOTIFICATION
    )
    assert again.verdict == ingest.Outcome.DUPLICATE


@override_settings(D1_PRODUCTION_SITE_TZ={"PC-JP-01": "Asia/Tokyo"}, D1_LATE_GRACE_HOURS=0)
def test_late_means_past_the_end_of_the_due_day_in_the_sites_time_zone():
    ingest.apply(
        ISSUER,
        op("CARD_PROD_ONGOING", details__dueDate="2025-03-05", details__productionSite="PC-JP-01"),
        Source.NOTIFICATION,
    )
    ongoing = CardOrder.objects.get()
    assert ongoing.late_after == datetime(2025, 3, 5, 15, 0, tzinfo=UTC)  # midnight in Tokyo
    assert not ongoing.is_late(datetime(2025, 3, 5, 14, 59, tzinfo=UTC))
    assert ongoing.is_late(datetime(2025, 3, 5, 15, 1, tzinfo=UTC))
    ingest.apply(ISSUER, op("CARD_SHIPPED", status="SUCCESSFUL"), Source.NOTIFICATION)
    assert not CardOrder.objects.get().is_late(datetime(2025, 4, 1, tzinfo=UTC))


def test_a_due_datetime_is_used_as_sent():
    ingest.apply(
        ISSUER,
        op("DATA_PREPARED", details__dueDate="2025-03-05T17:00:00+01:00"),
        Source.NOTIFICATION,
    )
    assert CardOrder.objects.get().late_after == datetime(2025, 3, 5, 16, 0, tzinfo=UTC)


def test_a_bulk_body_with_one_bad_item_applies_the_others():
    body = example("10")
    body["operations"][1]["cardId"] = "bad card id!"
    item = stored_item(ISSUER, json.dumps(body).encode(), {})
    report = inbox.process(item.pk)
    item.refresh_from_db()
    assert item.outcome == InboxItem.Outcome.PARTIAL
    assert (item.applied, item.quarantined) == (3, 1)
    assert report.results[1]["field"] == "operations[1].cardId"
    assert CardOrder.objects.count() == 3
    assert TimelineEvent.objects.filter(inbox=item).count() == 3


def test_a_body_that_is_not_json_is_kept_and_rejected():
    item = stored_item(ISSUER, b"{not json", {"content-type": "application/json"})
    report = inbox.process(item.pk)
    item.refresh_from_db()
    assert item.outcome == InboxItem.Outcome.REJECTED
    assert "not JSON" in report.error and bytes(item.body) == b"{not json"


def test_replaying_a_stored_body_is_idempotent():
    item = stored_item(ISSUER, json.dumps(example("10")).encode(), {})
    inbox.process(item.pk)
    report = inbox.replay(item)
    assert {entry["verdict"] for entry in report.results} == {ingest.Outcome.DUPLICATE}
    assert TimelineEvent.objects.count() == 4


# --- Disorder: shuffles, duplicates and concurrent deliveries converge ------------------------

LIFECYCLE = ["02", "04", "05", "06", "07", "08"]


def shuffled_with_duplicates(data: st.DataObject, cards: list[str]) -> list[dict]:
    """Every card's lifecycle plus up to six duplicates of its events, in an order hypothesis
    draws: what an at-least-once, unordered delivery may bring."""
    deliveries = []
    for card_id in cards:
        events = _lifecycle(card_id)
        copies = data.draw(st.lists(st.sampled_from(events), max_size=6), label=f"dups {card_id}")
        deliveries += events + copies
    return data.draw(st.permutations(deliveries), label="arrival order")


def _lifecycle(card_id: str) -> list[dict]:
    items = []
    for name in LIFECYCLE:
        item = example(name)["operations"][0]
        item["cardId"] = card_id
        items.append(item)
    return items


def _in_order_state(card_id: str) -> tuple:
    expected = {
        "stage": "CARD_SHIPPED",
        "operation_status": "SUCCESSFUL",
        "issuer_request_id": "ord-20250304-00412",
        "production_site": "PC-FR-GEM-01",
        "due_date": date(2025, 3, 5),
        "conflict": False,
    }
    return tuple(expected.values())


def _state(card_id: str) -> tuple:
    found = order(card_id)
    return (
        found.stage,
        found.operation_status,
        found.issuer_request_id,
        found.production_site,
        found.due_date,
        found.conflict,
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_shuffle_with_duplicates_ends_like_in_order_delivery(data):
    CardOrder.objects.all().delete()
    cards = ["crd-a", "crd-b"]
    deliveries = shuffled_with_duplicates(data, cards)
    batch = data.draw(st.integers(min_value=1, max_value=5), label="operations per POST")
    for start in range(0, len(deliveries), batch):
        chunk = [parse_operation(item) for item in deliveries[start : start + batch]]
        ingest.apply_many(delivered(chunk), Source.NOTIFICATION)
    for card_id in cards:
        received = [item for item in deliveries if item["cardId"] == card_id]
        assert _state(card_id) == _in_order_state(card_id)
        assert order(card_id).events.count() == len(LIFECYCLE)
        assert order(card_id).duplicates_received == len(received) - len(LIFECYCLE)
        statuses = set(order(card_id).events.values_list("status", flat=True))
        assert statuses == {item["details"]["status"] for item in _lifecycle(card_id)}


@pytest.mark.django_db(transaction=True)
def test_threads_delivering_shuffled_duplicated_sequences_converge(on_postgres):
    cards = [f"crd-conc-{n}" for n in range(4)]
    deliveries = [item for card_id in cards for item in _lifecycle(card_id) * 3]
    rng = random.Random(7)
    workers, errors = 6, []
    barrier = threading.Barrier(workers)

    def deliver(seed: int) -> None:
        mine = deliveries[:]
        random.Random(seed).shuffle(mine)
        try:
            barrier.wait()
            for start in range(0, len(mine), 1 + seed % 4):
                chunk = [parse_operation(item) for item in mine[start : start + 1 + seed % 4]]
                ingest.apply_many(delivered(chunk), Source.NOTIFICATION)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=deliver, args=(rng.randrange(1000),)) for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for card_id in cards:
        assert _state(card_id) == _in_order_state(card_id)
        assert order(card_id).events.count() == len(LIFECYCLE)
        assert order(card_id).duplicates_received == workers * 3 * len(LIFECYCLE) - len(LIFECYCLE)


def shipped(status: str, **overrides) -> Operation:
    shipment = {"carrier": "dhl", "trackingNumber": "T-1", "status": status, "message": status}
    return op("CARD_SHIPPED", status="SUCCESSFUL", details__shipment=shipment, **overrides)


def test_a_reordered_carrier_event_never_takes_a_delivered_parcel_back_on_the_road():
    ingest.apply(ISSUER, shipped("InTransit"), Source.NOTIFICATION)
    ingest.apply(ISSUER, shipped("Delivered"), Source.NOTIFICATION)
    late = ingest.apply(ISSUER, shipped("OutForDelivery"), Source.NOTIFICATION)
    assert late.verdict == Outcome.STALE and not late.changed
    assert CardOrder.objects.get().shipment_status == "Delivered"


def test_a_live_answer_puts_right_what_reordered_deliveries_got_wrong():
    # D1 sent InTransit then OutForDelivery; they arrived the other way round.
    ingest.apply(ISSUER, shipped("OutForDelivery"), Source.NOTIFICATION)
    ingest.apply(ISSUER, shipped("InTransit"), Source.NOTIFICATION)
    assert CardOrder.objects.get().shipment_status == "InTransit"
    repair = ingest.apply(ISSUER, shipped("OutForDelivery"), Source.RECONCILE)
    repaired = CardOrder.objects.get()
    assert (repair.verdict, repair.changed) == (ingest.Outcome.DUPLICATE, True)
    assert repaired.shipment_status == "OutForDelivery"
    assert repaired.events.count() == 2 and repaired.duplicates_received == 1
    again = ingest.apply(ISSUER, shipped("OutForDelivery"), Source.ON_DEMAND)
    assert (again.verdict, again.changed) == (ingest.Outcome.DUPLICATE, False)


def test_a_live_answer_may_take_a_parcel_back_from_delivered():
    ingest.apply(ISSUER, shipped("Delivered"), Source.NOTIFICATION)
    live = ingest.apply(ISSUER, shipped("ReturnToSender"), Source.ON_DEMAND)
    assert live.verdict == Outcome.APPLIED
    assert CardOrder.objects.get().shipment_status == "ReturnToSender"
    corrected = ingest.apply(ISSUER, shipped("InTransit"), Source.ON_DEMAND)
    assert corrected.verdict == Outcome.APPLIED and corrected.changed

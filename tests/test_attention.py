from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from tests.conftest import ISSUER, op
from tracker import attention, ingest
from tracker.attention import Reason
from tracker.models import CardOrder, Source, Threshold

pytestmark = pytest.mark.django_db

# Friday 6 March 2026, 19:00 UTC = 20:00 in Paris.
FRIDAY_EVENING = datetime(2026, 3, 6, 19, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_thresholds():
    attention.forget_thresholds()
    yield
    attention.forget_thresholds()


def receive(stage, at=FRIDAY_EVENING, card="crd-att-1", **overrides) -> CardOrder:
    overrides.setdefault("cardId", card)
    ingest.apply(ISSUER, op(stage, **overrides), Source.NOTIFICATION, received_at=at)
    return CardOrder.objects.get(card_id=card)


def reasons_at(order: CardOrder, moment: datetime) -> list[Reason]:
    return attention.reasons(order, moment)


@override_settings(D1_PRODUCTION_SITE_TZ={"PC-FR": "Europe/Paris"})
def test_late_holds_after_the_due_day_ends_at_the_site_and_not_once_shipped():
    order = receive(
        "CARD_PROD_ONGOING", details__dueDate="2026-03-09", details__productionSite="PC-FR"
    )
    end_of_due_day = datetime(2026, 3, 9, 23, 0, tzinfo=UTC)  # midnight in Paris
    assert Reason.LATE not in reasons_at(order, end_of_due_day - timedelta(minutes=1))
    assert Reason.LATE in reasons_at(order, end_of_due_day + timedelta(minutes=1))
    shipped = receive("CARD_SHIPPED", status="SUCCESSFUL", at=end_of_due_day + timedelta(hours=1))
    assert Reason.LATE not in reasons_at(shipped, end_of_due_day + timedelta(days=5))


@override_settings(D1_PRODUCTION_SITE_TZ={"PC-FR": "Europe/Paris"})
def test_silence_at_a_production_stage_counts_working_days_only():
    order = receive("CARD_PROD_ONGOING", details__productionSite="PC-FR")  # threshold 12 h
    # 4 h left on Friday, the weekend skipped, 8 h on Monday: 08:00 Paris = 07:00 UTC.
    monday = datetime(2026, 3, 9, 7, 0, tzinfo=UTC)
    assert order.silent_after == monday
    assert reasons_at(order, monday - timedelta(minutes=1)) == []
    assert reasons_at(order, monday + timedelta(minutes=1)) == [Reason.SILENT]
    assert order.attention_since == monday


@override_settings(D1_WORKING_DAYS=frozenset(range(7)))
def test_every_day_can_be_a_working_day():
    order = receive("CARD_PROD_ONGOING")
    assert order.silent_after == FRIDAY_EVENING + timedelta(hours=12)


def test_a_new_event_restarts_the_silence_clock():
    receive("CARD_PROD_READY")
    later = FRIDAY_EVENING + timedelta(days=3)
    order = receive("CARD_PROD_ONGOING", at=later)
    assert order.silent_after > later


def test_exceptions_unrecognized_statuses_and_conflicts_need_attention_at_once():
    rejected = receive("DATA_EXCEPTION", card="crd-rejected", status="FAILED")
    assert reasons_at(rejected, FRIDAY_EVENING) == [Reason.EXCEPTION]
    assert rejected.attention_since == FRIDAY_EVENING
    held = receive("CARD_PROD_ON_HOLD", card="crd-held")
    assert Reason.UNRECOGNIZED in reasons_at(held, FRIDAY_EVENING)
    receive("CARD_SHIPPED", card="crd-both", status="SUCCESSFUL")
    both = receive("CARD_PROD_CANCELED", card="crd-both", status="FAILED")
    assert Reason.CONFLICT in reasons_at(both, FRIDAY_EVENING)


def test_a_cancellation_is_not_an_exception():
    canceled = receive("CARD_PROD_CANCELED", status="FAILED")
    assert reasons_at(canceled, FRIDAY_EVENING + timedelta(days=30)) == []
    assert canceled.attention_since is None


def shipped(status: str, card="crd-ship") -> CardOrder:
    return receive(
        "CARD_SHIPPED",
        card=card,
        status="SUCCESSFUL",
        details__shipment={"carrier": "dhl", "trackingNumber": "1", "status": status},
    )


def test_no_carrier_movement_after_the_quiet_threshold_unless_delivered():
    moving = shipped("InTransit")
    quiet_from = FRIDAY_EVENING + timedelta(hours=96)  # calendar hours
    assert moving.silent_after == quiet_from
    assert reasons_at(moving, quiet_from - timedelta(minutes=1)) == []
    assert reasons_at(moving, quiet_from + timedelta(minutes=1)) == [Reason.NO_CARRIER_MOVEMENT]
    delivered = shipped("Delivered", card="crd-delivered")
    assert delivered.silent_after is None and delivered.attention_since is None


def test_a_carrier_problem_follows_the_configurable_map():
    assert reasons_at(shipped("Exception"), FRIDAY_EVENING) == [Reason.CARRIER_PROBLEM]
    assert reasons_at(shipped("Lost", card="crd-lost"), FRIDAY_EVENING) == []
    with override_settings(D1_SHIPMENT_STATUS_MAP={"Lost": "problem"}):
        order = CardOrder.objects.get(card_id="crd-lost")
        assert reasons_at(order, FRIDAY_EVENING) == [Reason.CARRIER_PROBLEM]


def test_a_registered_order_never_heard_of_needs_attention_after_the_threshold():
    order = CardOrder(issuer_id=ISSUER, card_id="crd-registered", first_seen_at=FRIDAY_EVENING)
    attention.update(order)
    assert order.silent_after == FRIDAY_EVENING + timedelta(hours=24)
    assert reasons_at(order, FRIDAY_EVENING + timedelta(hours=23)) == []
    assert reasons_at(order, FRIDAY_EVENING + timedelta(hours=25)) == [Reason.NEVER_HEARD]


@override_settings(D1_WORKING_DAYS=frozenset(range(7)))
def test_an_edited_threshold_is_applied_to_the_orders_it_governs():
    order = receive("CARD_PROD_ONGOING")
    receive("CARD_PROD_DONE", card="crd-other")
    Threshold.objects.filter(name="CARD_PROD_ONGOING").update(hours=2)
    assert attention.recompute("CARD_PROD_ONGOING") == 1
    order.refresh_from_db()
    assert order.silent_after == FRIDAY_EVENING + timedelta(hours=2)
    other = CardOrder.objects.get(card_id="crd-other")
    assert other.silent_after == FRIDAY_EVENING + timedelta(hours=24)


@override_settings(D1_WORKING_DAYS=frozenset(range(7)))
def test_the_sql_filter_of_each_reason_agrees_with_the_reasons_of_each_order():
    receive("CARD_PROD_ONGOING", card="a", details__dueDate="2026-03-07")
    receive("DATA_EXCEPTION", card="b", status="FAILED")
    receive("CARD_PROD_ON_HOLD", card="c")
    shipped("InTransit", card="d")
    shipped("Exception", card="e")
    receive("CARD_PROD_CANCELED", card="f", status="FAILED")
    registered = CardOrder(issuer_id=ISSUER, card_id="g", first_seen_at=FRIDAY_EVENING)
    attention.update(registered)
    registered.save()
    for hours in (0, 13, 30, 100):
        moment = FRIDAY_EVENING + timedelta(hours=hours)
        for reason in Reason:
            by_sql = set(
                CardOrder.objects.filter(attention.reason_filter(reason, moment)).values_list(
                    "card_id", flat=True
                )
            )
            by_python = {
                o.card_id for o in CardOrder.objects.all() if reason in reasons_at(o, moment)
            }
            assert by_sql == by_python, (reason, hours)
        in_queue = set(
            CardOrder.objects.filter(attention.needs_attention(moment)).values_list(
                "card_id", flat=True
            )
        )
        assert in_queue == {o.card_id for o in CardOrder.objects.all() if reasons_at(o, moment)}

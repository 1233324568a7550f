"""End to end: the D1 sandbox pushes whole lifecycles, duplicates and reordering
included, into the real notification endpoint of a live server (with a bearer token from
Tracker's own token endpoint), and Tracker ends in the state D1 is in."""

from collections import Counter

import pytest

from tests.conftest import drain
from tests.sandbox_fixtures import ISSUER, card
from tracker.d1 import lifecycle
from tracker.models import CardOrder, InboxItem, Outcome, Source, TimelineEvent

pytestmark = pytest.mark.django_db(transaction=True)

CARDS = [f"crd-e2e-{n}" for n in range(6)]


def delivered(d1) -> list[dict]:
    return [n for n in d1.notifications() if n["outcome"] == "delivered"]


def test_the_sandbox_pushes_whole_lifecycles_into_a_live_server_and_tracker_ends_right(
    live_server, d1
):
    d1.configure(
        notify_url=live_server.url,
        notify_retry_base=0.01,
        notify_batch_size=4,
        notify_duplicate_share=0.3,
        notify_reorder_share=0.4,
        data_exception_share=0,
        cancel_share=0,
        unknown_status_share=0,
    )
    d1.seed(*[card(card_id) for card_id in CARDS])

    # Production, pushed out of order and partly twice.
    for card_id in CARDS:
        d1.advance_card(ISSUER, card_id, to=lifecycle.CARD_SHIPPED)
    assert d1.flush(timeout=20)["pending"] == 0
    drain()  # answered 204, then applied by the applier

    arrivals = delivered(d1)
    ranks = {
        card_id: [lifecycle.rank(n["status"]) for n in arrivals if n["cardId"] == card_id]
        for card_id in CARDS
    }
    assert any(r != sorted(r) for r in ranks.values()), "the sandbox reordered nothing"
    assert any(n["duplicate"] for n in arrivals), "the sandbox duplicated nothing"
    for card_id in CARDS:
        order = CardOrder.objects.get(issuer_id=ISSUER, card_id=card_id)
        current = d1.card(ISSUER, card_id)["current"]
        assert (order.stage, order.terminal) == (lifecycle.CARD_SHIPPED, True)
        assert order.operation_id == current["operationId"]
        statuses = set(order.events.values_list("status", flat=True))
        assert statuses == set(lifecycle.PROGRESS)  # every stage once, however it arrived
    assert TimelineEvent.objects.filter(verdict=Outcome.STALE).exists()

    # Then the carrier's updates. Within CARD_SHIPPED D1 sends no time to order them by, so
    # the last one received wins (REFERENCE §4): they come in order here, still partly twice.
    d1.configure(notify_reorder_share=0.0)
    for card_id in CARDS:
        d1.advance_card(ISSUER, card_id)
    assert d1.flush(timeout=20)["pending"] == 0
    drain()  # answered 204, then applied by the applier

    for card_id in CARDS:
        order = CardOrder.objects.get(issuer_id=ISSUER, card_id=card_id)
        shipment = d1.card(ISSUER, card_id)["current"]["details"]["shipment"]
        assert shipment["status"] == "Delivered"
        assert (order.stage, order.operation_status) == (lifecycle.CARD_SHIPPED, "SUCCESSFUL")
        assert (order.carrier, order.tracking_number, order.shipment_status) == (
            shipment["carrier"],
            shipment["trackingNumber"],
            "Delivered",
        )
        assert order.tracking_url == shipment["trackingUrl"]
        assert not order.unrecognized_status and not order.conflict

    # Nothing lost, nothing doubled: each body stored once, each event in the timeline once,
    # each repeat counted as a duplicate.
    counters = d1.counters()
    arrivals = delivered(d1)
    assert counters.get("notify.failed", 0) == counters.get("notify.rejected", 0) == 0
    assert counters["notify.posts"] == InboxItem.objects.count()
    assert set(InboxItem.objects.values_list("outcome", flat=True)) == {InboxItem.Outcome.PROCESSED}
    assert counters["notify.delivered"] == len(arrivals)
    distinct = Counter((n["cardId"], n["status"], n["shipmentStatus"]) for n in arrivals)
    assert TimelineEvent.objects.count() == len(distinct)
    assert set(TimelineEvent.objects.values_list("source", flat=True)) == {Source.NOTIFICATION}
    duplicates = sum(CardOrder.objects.values_list("duplicates_received", flat=True))
    assert duplicates == sum(n["duplicate"] for n in arrivals) > 0

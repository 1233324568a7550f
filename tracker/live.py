"""Live status: fetch one card from D1 and apply what it says through the ingest.

Pages ("Refresh from D1", "Look up in D1"), `card_status --live` and the reconciliation task all
call refresh(); only the source and the client profile differ.
"""

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from tracker import ingest, pan
from tracker.d1.client import D1NotFound, Profile, client
from tracker.models import CardOrder, Source


class NotServed(ValueError):
    """The card belongs to an issuer this deployment does not serve, or its id is a card
    number: D1 is not asked."""


@dataclass(frozen=True)
class Refresh:
    """What a live refresh did: the order (None if D1 sent nothing Tracker tracks) and whether
    its state changed."""

    order_id: int | None
    changed: bool
    results: tuple[ingest.Result, ...]


def refresh(
    issuer_id: str,
    card_id: str,
    *,
    source: Source = Source.ON_DEMAND,
    profile: Profile = Profile.INTERACTIVE,
) -> Refresh:
    """Fetch the card from D1 and apply it; D1Error subclasses propagate (D1NotFound flags the
    order as unknown to D1 first). ValueError for ids D1 could never accept, NotServed (a
    ValueError) for an issuer not in D1_ISSUER_IDS."""
    if issuer_id not in settings.D1_ISSUER_IDS:
        raise NotServed(f"issuer {issuer_id[:10]!r} is not served here (D1_ISSUER_IDS)")
    if pan.contains_pan(card_id):
        raise NotServed("the card ID is a card number")
    orders = CardOrder.objects.filter(issuer_id=issuer_id, card_id=card_id)
    try:
        operations = client(profile).get_production_status(issuer_id, card_id)
    except D1NotFound:
        orders.update(unknown_to_d1=True, last_checked_at=timezone.now())
        raise
    now = timezone.now()
    deliveries = [ingest.Delivery(issuer_id, operation, now) for operation in operations]
    results = tuple(ingest.apply_many(deliveries, source, checked_live=True))
    order_id = next((result.order_id for result in results if result.order_id), None)
    if order_id is None:
        # D1 answered with nothing Tracker tracks: the check still counts.
        orders.update(unknown_to_d1=False, last_checked_at=timezone.now())
    return Refresh(order_id, any(result.changed for result in results), results)

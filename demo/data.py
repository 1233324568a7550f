"""Demo data: one user per role and a few hundred orders in every stage, fed through the ingest.

Orders are made of D1 operation objects applied exactly as notifications would be, so what the
demo shows is what the real path produces.
"""

import random
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from tracker import attention, ingest, roles
from tracker.d1 import lifecycle
from tracker.d1.schema import parse_operation
from tracker.models import CardOrder, Outcome, Source, TimelineEvent

DEMO_USERS = (
    # username, password, group, staff (admin site access)
    ("agent", "agent-demo", roles.AGENTS, False),
    ("supervisor", "supervisor-demo", roles.SUPERVISORS, True),
    ("admin", "admin-demo", roles.ADMINISTRATORS, True),
)
SITES = ("PC-FR-GEM-01", "PC-DE-MUC-02", "PC-SG-SIN-01")
CARRIERS = (
    ("la-poste-colissimo", "https://www.laposte.fr/outils/suivre-vos-envois?code={}"),
    ("dhl", "https://www.dhl.com/fr-en/home/tracking.html?tracking-id={}"),
    ("ups", "https://www.ups.com/track?tracknum={}"),
)
CARRIER_EVENTS = (
    ("InfoReceived", "Shipment information received."),
    ("InTransit", "Parcel sorted at regional hub."),
    ("OutForDelivery", "Out for delivery."),
    ("Delivered", "Parcel delivered to the recipient's letterbox."),
)


def seed_users() -> list[tuple[str, str, str]]:
    """Create (or reset) the demo users; return (username, password, role) for printing."""
    created = []
    for username, password, group_name, staff in DEMO_USERS:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = staff
        user.save()
        user.groups.set([Group.objects.get(name=group_name)])
        created.append((username, password, group_name))
    return created


def seed_orders(count: int = 200, seed: int = 2025) -> int:
    """Give the demo issuer `count` orders spread over every stage, unless it has some already."""
    issuer_id = settings.D1_ISSUER_IDS[0]
    if CardOrder.objects.filter(issuer_id=issuer_id).exists():
        return 0
    rng = random.Random(seed)
    now = timezone.now()
    with transaction.atomic():
        for n in range(count):
            for received_at, operation in _story(rng, n, now):
                ingest.apply(
                    issuer_id,
                    parse_operation(operation),
                    Source.NOTIFICATION,
                    received_at=received_at,
                )
        _register_unheard_of(issuer_id, now)
        # What the issuer's own order records add (never D1): the customer's reference.
        orders = list(CardOrder.objects.filter(issuer_id=issuer_id))
        for order in orders:
            order.customer_reference = "CUST-" + order.card_id.removeprefix("crd-demo-")
        CardOrder.objects.bulk_update(orders, ["customer_reference"])
    return count


def _register_unheard_of(issuer_id: str, now: datetime) -> None:
    """A few orders the issuer registered that D1 has never mentioned (queue: never heard of)."""
    for n in range(3):
        order = CardOrder(
            issuer_id=issuer_id,
            card_id=f"crd-demo-reg-{n:03d}",
            issuer_request_id=f"ord-demo-reg-{n:03d}",
            first_seen_at=now - timedelta(hours=20 + 12 * n),
        )
        attention.update(order)
        order.save()


def _story(rng: random.Random, n: int, now: datetime) -> list[tuple[datetime, dict]]:
    """The notifications one demo card would have received so far, with when each arrived.

    Older orders have got further; most are on time, some are late or have gone silent, so the
    supervisors' queue shows every reason.
    """
    age = timedelta(hours=rng.uniform(2, 24 * 8))
    started = now - age
    base = {
        "operationId": str(uuid.UUID(int=rng.getrandbits(128))),
        "operation": "PRODUCE",
        "status": "PENDING",
        "startTime": started.isoformat(),
        "cardId": f"crd-demo-{n:06d}",
        "issuerRequestId": f"ord-demo-{n:06d}",
    }
    # D+1 for most orders (creation, replacement), D+10 for renewals (REFERENCE §7).
    due = started + timedelta(days=rng.choice((1, 1, 1, 2, 10)))
    details = {"dueDate": due.date().isoformat(), "productionSite": rng.choice(SITES)}
    if n % 5 == 0:
        details["inputFileName"] = f"CI_DEMO_{started:%Y%m%d}_{n % 3:02d}.json"
    progress = lifecycle.PROGRESS
    if age < timedelta(days=2):
        reached = progress[min(len(progress) - 1, int(age / timedelta(hours=rng.uniform(3, 9))))]
    elif rng.random() < 0.75:
        reached = lifecycle.CARD_SHIPPED
    else:
        reached = rng.choice(progress[:-1])  # an old order stuck in production: late
    stages = progress[: progress.index(reached) + 1]
    # Events spread over the first part of the order's life; a stuck order went quiet since.
    span = age * rng.uniform(0.3, 0.95)
    moments = sorted(started + span * rng.random() for _ in stages)
    moments[0] = started + timedelta(seconds=5)
    story = [
        (at, {**base, "details": {"status": stage, **details}})
        for at, stage in zip(moments, stages, strict=True)
    ]
    if reached == lifecycle.CARD_SHIPPED:
        story[-1:] = _shipment_updates(rng, base, details, moments[-1], now)
        if n % 23 == 0:  # the carrier reports a problem
            at, last = story[-1]
            problem = {**last["details"]["shipment"], "status": "AttemptFail"}
            problem["message"] = "Delivery attempt failed: recipient absent."
            story.append((at + timedelta(hours=3), _with_shipment(last, problem)))
        elif n % 29 == 0:  # D1 contradicts itself: shipped, then canceled
            canceled = {
                **base,
                "status": "FAILED",
                "details": {"status": "CARD_PROD_CANCELED", **details},
            }
            story.append((story[-1][0] + timedelta(hours=1), canceled))
    elif n % 11 == 0:
        story.append((moments[-1] + timedelta(minutes=30), _ending(rng, base, details, started)))
    elif n % 17 == 0:
        on_hold = {**base, "details": {"status": "CARD_PROD_ON_HOLD", **details}}
        story.append((moments[-1] + timedelta(minutes=10), on_hold))
    return story


def _shipment_updates(
    rng: random.Random, base: dict, details: dict, shipped: datetime, now: datetime
) -> list[tuple[datetime, dict]]:
    carrier, url = rng.choice(CARRIERS)
    tracking = f"{rng.randrange(10**9, 10**10)}"
    updates = []
    at = shipped
    for status, message in CARRIER_EVENTS[: rng.randint(1, len(CARRIER_EVENTS))]:
        shipment = {
            "carrier": carrier,
            "trackingNumber": tracking,
            "status": status,
            "message": message,
            "trackingUrl": url.format(tracking),
        }
        operation = {
            **base,
            "status": "SUCCESSFUL",
            "endTime": shipped.isoformat(),
            "details": {"status": lifecycle.CARD_SHIPPED, **details, "shipment": shipment},
        }
        updates.append((min(at, now), operation))
        at += timedelta(hours=rng.uniform(4, 30))
    return updates


def _with_shipment(operation: dict, shipment: dict) -> dict:
    return {**operation, "details": {**operation["details"], "shipment": shipment}}


def _ending(rng: random.Random, base: dict, details: dict, started: datetime) -> dict:
    status, error_code, reason = rng.choice(
        (
            (lifecycle.DATA_EXCEPTION, "FIELD_INVALID_VALUE", "Embossing line 2 is too long."),
            (lifecycle.CARD_PROD_CANCELED, None, "Order pulled by issuer before personalization."),
            (lifecycle.CARD_PROD_EXCEPTION, "PERSO_FAILURE", "Chip personalization failed twice."),
        )
    )
    ending = {
        **base,
        "status": "FAILED",
        "endTime": (started + timedelta(hours=2)).isoformat(),
        "details": {"status": status, **details, "reason": reason},
    }
    if error_code:
        ending.update(errorCode=error_code, error=reason)
    return ending


def sandbox_cards(issuer_id: str) -> list[dict]:
    """Seed specs for the D1 sandbox: each order with the operations Tracker holds for it.

    The sandbox answers productionStatus with the latest of them and carries each card on from
    there, so the demo's orders keep moving and their notifications keep arriving.
    """
    events = (
        TimelineEvent.objects.filter(
            order__issuer_id=issuer_id,
            verdict__in=(Outcome.APPLIED, Outcome.UNRECOGNIZED),
            raw__isnull=False,
        )
        .order_by("order_id", "received_at", "id")
        .values_list("order__card_id", "raw")
    )
    operations: dict[str, list[dict]] = {}
    for card_id, raw in events:
        operations.setdefault(card_id, []).append(raw)
    return [
        {"issuerId": issuer_id, "cardId": card_id, "operations": ops}
        for card_id, ops in operations.items()
    ]

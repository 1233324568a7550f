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

from tracker import ingest, roles
from tracker.d1 import lifecycle
from tracker.d1.schema import parse_operation
from tracker.models import CardOrder, Source, TimelineEvent, Verdict

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
            for operation in _story(rng, n, now):
                ingest.apply(issuer_id, parse_operation(operation), Source.NOTIFICATION)
        # What the issuer's own order records add (never D1): the customer's reference.
        orders = list(CardOrder.objects.filter(issuer_id=issuer_id))
        for order in orders:
            order.customer_reference = "CUST-" + order.card_id.removeprefix("crd-demo-")
        CardOrder.objects.bulk_update(orders, ["customer_reference"])
    return count


def _story(rng: random.Random, n: int, now: datetime) -> list[dict]:
    """The notifications one demo card would have received so far."""
    started = now - timedelta(hours=rng.uniform(1, 24 * 12))
    base = {
        "operationId": str(uuid.UUID(int=rng.getrandbits(128))),
        "operation": "PRODUCE",
        "status": "PENDING",
        "startTime": started.isoformat(),
        "cardId": f"crd-demo-{n:06d}",
        "issuerRequestId": f"ord-demo-{n:06d}",
    }
    details = {
        "dueDate": (started + timedelta(days=rng.choice((1, 1, 2, 10)))).date().isoformat(),
        "productionSite": rng.choice(SITES),
    }
    if n % 5 == 0:
        details["inputFileName"] = f"CI_DEMO_{started:%Y%m%d}_{n % 3:02d}.json"
    reached = rng.choice(lifecycle.PROGRESS)
    story = []
    for stage in lifecycle.PROGRESS[: lifecycle.PROGRESS.index(reached) + 1]:
        story.append({**base, "details": {"status": stage, **details}})
    if reached == lifecycle.CARD_SHIPPED:
        story[-1:] = _shipment_updates(rng, base, details, started)
    elif n % 11 == 0:
        story.append(_ending(rng, base, details, started))
    elif n % 17 == 0:
        story.append({**base, "details": {"status": "CARD_PROD_ON_HOLD", **details}})
    return story


def _shipment_updates(rng: random.Random, base: dict, details: dict, started: datetime):
    carrier, url = rng.choice(CARRIERS)
    tracking = f"{rng.randrange(10**9, 10**10)}"
    end = (started + timedelta(hours=rng.uniform(6, 30))).isoformat()
    updates = []
    for status, message in CARRIER_EVENTS[: rng.randint(1, len(CARRIER_EVENTS))]:
        shipment = {
            "carrier": carrier,
            "trackingNumber": tracking,
            "status": status,
            "message": message,
            "trackingUrl": url.format(tracking),
        }
        updates.append(
            {
                **base,
                "status": "SUCCESSFUL",
                "endTime": end,
                "details": {"status": lifecycle.CARD_SHIPPED, **details, "shipment": shipment},
            }
        )
    return updates


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
            verdict__in=(Verdict.APPLIED, Verdict.UNRECOGNIZED),
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

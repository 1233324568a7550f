"""Reads the pages need. Writes go through tracker/ingest.py, never through here."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from tracker.models import AuthFailureCount, InboxItem

HEALTH_WINDOW = timedelta(hours=24)
# Operations counted per verdict; each InboxItem holds its own counts (tracker/inbox.py).
_OPERATION_COUNTS = ("applied", "duplicate", "stale", "unrecognized", "conflict", "quarantined")


@dataclass(frozen=True)
class IssuerHealth:
    """One issuer's deliveries: operations by verdict, bodies by outcome, over HEALTH_WINDOW."""

    issuer_id: str
    last_received_at: datetime | None
    notifications: int = 0
    applied: int = 0
    duplicate: int = 0
    stale: int = 0
    unrecognized: int = 0
    conflict: int = 0
    quarantined: int = 0
    rejected: int = 0  # bodies answered 400 (not JSON, no operations list)
    failed: int = 0  # bodies answered 503 (transient failure; D1 delivers again)
    auth_failures: int = 0


@dataclass(frozen=True)
class DeliveryHealth:
    since: datetime
    issuers: list[IssuerHealth]
    token_auth_failures: int


def delivery_health(now: datetime | None = None) -> DeliveryHealth:
    """Per served issuer: the last notification, and the last 24 h by outcome and auth failures."""
    now = now or timezone.now()
    since = now - HEALTH_WINDOW
    served = settings.D1_ISSUER_IDS
    # (issuer_id, received_at) is indexed: the window and each "last" are index range scans.
    recent = InboxItem.objects.filter(issuer_id__in=served, received_at__gte=since)
    counts = {
        row.pop("issuer_id"): row
        for row in recent.values("issuer_id").annotate(
            notifications=Count("pk"),
            rejected=Count("pk", filter=Q(outcome=InboxItem.Outcome.REJECTED)),
            failed=Count("pk", filter=Q(outcome=InboxItem.Outcome.FAILED)),
            **{name: Sum(name) for name in _OPERATION_COUNTS},
        )
    }
    # Failures are counted by the hour: the window takes whole hours, the current one included.
    failures = dict(
        AuthFailureCount.objects.filter(hour__gt=since - timedelta(hours=1))
        .values("issuer_id")
        .annotate(total=Sum("count"))
        .values_list("issuer_id", "total")
    )
    issuers = [
        IssuerHealth(
            issuer_id=issuer_id,
            last_received_at=InboxItem.objects.filter(issuer_id=issuer_id).aggregate(
                last=Max("received_at")
            )["last"],
            auth_failures=failures.get(issuer_id, 0),
            **counts.get(issuer_id, {}),
        )
        for issuer_id in served
    ]
    return DeliveryHealth(
        since=since,
        issuers=issuers,
        token_auth_failures=failures.get(AuthFailureCount.TOKEN_ENDPOINT, 0),
    )

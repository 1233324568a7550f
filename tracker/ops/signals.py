"""The numbers operations watch, each read in one place: alerts, /healthz and /metrics share them.

Every function is a handful of indexed queries or one cache read, cheap enough to run on each
scrape and each alert evaluation.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Sum
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tracker import applier, attention
from tracker.d1 import breaker
from tracker.models import AuthFailureCount, CardOrder, InboxItem, Sweep


def apply_lag_seconds(now: datetime | None = None) -> float:
    """Age of the oldest notification body stored but not applied yet (0 when none waits)."""
    return applier.apply_lag(now).seconds


# Counts over a window, not the whole inbox: (outcome, received_at) is indexed, so each is an
# index range scan of a day's rows however long the inbox is kept.
WINDOW = timedelta(hours=24)


def notification_outcomes(now: datetime | None = None) -> dict[str, int]:
    """Notification bodies received in the last 24 hours, by outcome (received, processed, …)."""
    since = (now or timezone.now()) - WINDOW
    counts = dict(
        InboxItem.objects.filter(received_at__gte=since)
        .values("outcome")
        .annotate(n=Count("pk"))
        .values_list("outcome", "n")
    )
    return {outcome: counts.get(outcome, 0) for outcome in InboxItem.Outcome.values}


def operation_verdicts(now: datetime | None = None) -> dict[str, int]:
    """Operations in the notifications of the last 24 hours, by verdict (applied, duplicate, …)."""
    since = (now or timezone.now()) - WINDOW
    names = ("applied", "duplicate", "stale", "unrecognized", "conflict", "quarantined", "ignored")
    totals = InboxItem.objects.filter(received_at__gte=since).aggregate(
        **{name: Sum(name) for name in names}
    )
    return {name: totals[name] or 0 for name in names}


def last_notifications() -> dict[str, datetime | None]:
    """Per served issuer, when its last notification arrived (None: never)."""
    found = dict(
        InboxItem.objects.filter(issuer_id__in=settings.D1_ISSUER_IDS)
        .values("issuer_id")
        .annotate(last=Max("received_at"))
        .values_list("issuer_id", "last")
    )
    return {issuer_id: found.get(issuer_id) for issuer_id in settings.D1_ISSUER_IDS}


def task_backlog() -> int:
    """Tasks enqueued and not yet taken by a worker."""
    return DBTaskResult.objects.filter(status=TaskResultStatus.READY).count()


def tasks_by_status() -> dict[str, int]:
    rows = DBTaskResult.objects.values("status").annotate(n=Count("pk")).values_list("status", "n")
    counts = dict(rows)
    return {status.value: counts.get(status.value, 0) for status in TaskResultStatus}


def queue_sizes(now: datetime | None = None) -> dict[str, int]:
    """Open orders needing attention (not acknowledged or snoozed), per reason, and in all."""
    now = now or timezone.now()
    queue = CardOrder.objects.filter(attention.needs_attention(now))
    counts = queue.aggregate(
        total=Count("id"),
        **{
            reason.value: Count("id", filter=attention.reason_filter(reason, now))
            for reason in attention.Reason
        },
    )
    return counts


def late_count(now: datetime | None = None) -> int:
    """Open orders past their due moment, acknowledged ones included."""
    now = now or timezone.now()
    return CardOrder.objects.filter(terminal=False, late_after__lt=now).count()


def last_sweep() -> Sweep | None:
    """The most recent finished sweep."""
    return Sweep.objects.filter(finished_at__isnull=False).order_by("-started_at", "-id").first()


def sweep_repairs() -> int:
    """Cards repaired by every sweep still kept."""
    return Sweep.objects.aggregate(total=Sum("repaired"))["total"] or 0


def auth_failures_last_hour(now: datetime | None = None) -> int:
    """Refused authentications at the D1-facing endpoints in this hour and the one before."""
    now = now or timezone.now()
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    total = AuthFailureCount.objects.filter(hour__gte=since).aggregate(n=Sum("count"))["n"]
    return total or 0


@dataclass(frozen=True)
class BreakerState:
    state: str  # closed, open, half_open
    failures: int
    open_seconds: float  # how long it has been open (0 when closed)


def breaker_state(now: datetime | None = None) -> BreakerState:
    """The shared D1 circuit breaker, as every process sees it."""
    current = breaker.state()
    opened = current["opened_at"]
    seconds = 0.0
    if opened is not None:
        now = now or timezone.now()
        seconds = max(0.0, (now - datetime.fromisoformat(opened)).total_seconds())
    return BreakerState(current["state"], current["failures"], seconds)

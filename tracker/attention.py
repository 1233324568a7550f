"""Why an order needs attention, and since when.

Time-based reasons (late, silent, no carrier movement, never heard of) become true by the clock
alone, without any event. So instead of evaluating them over every order on every page load, the
ingest stores the moment each one will start to hold (`late_after`, `silent_after`) and the earliest
moment any reason holds (`attention_since`). The queue is then `attention_since <= now`: an index
range scan however many orders there are.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, TextChoices
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tracker import sla
from tracker.d1 import lifecycle, shipment
from tracker.models import CardOrder, Threshold


class Reason(TextChoices):
    LATE = "late", _("late")
    SILENT = "silent", _("silent")
    EXCEPTION = "exception", _("exception")
    UNRECOGNIZED = "unrecognized", _("unrecognized status")
    CONFLICT = "conflict", _("conflict")
    NO_CARRIER_MOVEMENT = "no_carrier_movement", _("no carrier movement")
    CARRIER_PROBLEM = "carrier_problem", _("carrier problem")
    NEVER_HEARD = "never_heard", _("never heard of")


# Sensible defaults for a D+1 service; the admin site edits them (Threshold rows).
DEFAULT_HOURS = {
    lifecycle.CARD_PROD_REQUESTED: 4,
    lifecycle.DATA_PREPARED: 24,
    lifecycle.CARD_PROD_READY: 24,
    lifecycle.CARD_PROD_ONGOING: 12,
    lifecycle.CARD_PROD_DONE: 24,
    Threshold.CARRIER_QUIET: 96,
    Threshold.NEVER_HEARD: 24,
}
_EXCEPTIONS = (lifecycle.DATA_EXCEPTION, lifecycle.CARD_PROD_EXCEPTION)
_THRESHOLDS_TTL = 30.0  # seconds a process trusts its copy of the thresholds


@dataclass(frozen=True)
class Thresholds:
    hours: dict[str, int]

    def of(self, name: str) -> timedelta:
        return timedelta(hours=self.hours.get(name, DEFAULT_HOURS[lifecycle.CARD_PROD_REQUESTED]))


_cached: tuple[float, Thresholds] | None = None


def thresholds() -> Thresholds:
    """The thresholds in force; read from the database at most every 30 s per process."""
    global _cached
    if _cached is None or time.monotonic() - _cached[0] > _THRESHOLDS_TTL:
        stored = dict(Threshold.objects.values_list("name", "hours"))
        _cached = (time.monotonic(), Thresholds({**DEFAULT_HOURS, **stored}))
    return _cached[1]


def forget_thresholds() -> None:
    """Make this process read the thresholds again (after an edit, and in tests)."""
    global _cached
    _cached = None


def state_changed(order: CardOrder, at: datetime) -> None:
    """The order's state changed at `at`: an acknowledgement or a snooze holds only until then."""
    order.state_changed_at = at
    order.muted_until = None


def update(order: CardOrder, limits: Thresholds | None = None) -> None:
    """Recompute the order's silent_after and attention_since from its current state."""
    limits = limits or thresholds()
    order.silent_after = _silent_after(order, limits)
    moments = [order.silent_after]
    if not order.terminal:
        moments.append(order.late_after)
    if _flags(order):
        moments.append(order.state_changed_at or order.last_event_at or order.first_seen_at)
    moments = [moment for moment in moments if moment is not None]
    order.attention_since = min(moments) if moments else None


def reasons(order: CardOrder, now: datetime | None = None) -> list[Reason]:
    """Every reason that holds for this order now, most urgent first."""
    now = now or timezone.now()
    found = []
    if order.is_late(now):
        found.append(Reason.LATE)
    if order.silent_after and order.silent_after <= now:
        if order.last_event_at is None:
            found.append(Reason.NEVER_HEARD)
        elif order.stage == lifecycle.CARD_SHIPPED:
            found.append(Reason.NO_CARRIER_MOVEMENT)
        else:
            found.append(Reason.SILENT)
    return found + _flags(order)


def needs_attention(now: datetime) -> Q:
    """Orders with at least one reason now, acknowledged and snoozed ones left out.

    A snooze that has ended still sets muted_until until tracker.queue.wake_snoozed() clears it;
    the queue calls it before it reads, so `muted_until IS NULL` (an indexed predicate) suffices.
    """
    return Q(attention_since__lte=now, muted_until__isnull=True)


def reason_filter(reason: str, now: datetime) -> Q:
    """The SQL condition under which one reason holds (mirrors reasons())."""
    silent = Q(silent_after__lte=now)
    return {
        Reason.LATE: Q(terminal=False, late_after__lt=now),
        Reason.SILENT: silent & Q(last_event_at__isnull=False) & ~Q(stage=lifecycle.CARD_SHIPPED),
        Reason.NEVER_HEARD: silent & Q(last_event_at__isnull=True),
        Reason.NO_CARRIER_MOVEMENT: silent & Q(stage=lifecycle.CARD_SHIPPED),
        Reason.EXCEPTION: _exception_filter(),
        Reason.UNRECOGNIZED: ~Q(unrecognized_status=""),
        Reason.CONFLICT: Q(conflict=True),
        Reason.CARRIER_PROBLEM: _carrier_problem_filter(),
    }[Reason(reason)]


def _exception_filter() -> Q:
    # A cancellation is the issuer's own decision, not a failure to chase (D1 marks it FAILED).
    failed = Q(operation_status="FAILED") & ~Q(stage=lifecycle.CARD_PROD_CANCELED)
    return Q(stage__in=_EXCEPTIONS) | failed


def _carrier_problem_filter() -> Q:
    return Q(
        stage=lifecycle.CARD_SHIPPED,
        shipment_status__in=shipment.statuses_in(shipment.PROBLEM, shipment.RETURNED),
    )


def _flags(order: CardOrder) -> list[Reason]:
    """The reasons that hold because of what D1 said, whatever the time."""
    found = []
    if order.stage in _EXCEPTIONS or (
        order.operation_status == "FAILED" and order.stage != lifecycle.CARD_PROD_CANCELED
    ):
        found.append(Reason.EXCEPTION)
    if order.unrecognized_status:
        found.append(Reason.UNRECOGNIZED)
    if order.conflict:
        found.append(Reason.CONFLICT)
    if order.stage == lifecycle.CARD_SHIPPED and shipment.bucket(order.shipment_status) in (
        shipment.PROBLEM,
        shipment.RETURNED,
    ):
        found.append(Reason.CARRIER_PROBLEM)
    return found


def _silent_after(order: CardOrder, limits: Thresholds) -> datetime | None:
    if order.last_event_at is None:
        if order.stage_rank:
            return None  # state given by hand without an event: nothing to wait for
        return order.first_seen_at + limits.of(Threshold.NEVER_HEARD)
    if order.stage == lifecycle.CARD_SHIPPED:
        if shipment.bucket(order.shipment_status) in (shipment.DELIVERED, shipment.RETURNED):
            return None
        # Carriers move parcels on any day: calendar time, not the site's working days.
        quiet_since = order.shipment_updated_at or order.last_event_at
        return quiet_since + limits.of(Threshold.CARRIER_QUIET)
    if order.terminal:
        return None
    stage = order.stage or lifecycle.CARD_PROD_REQUESTED
    zone = sla.site_timezone(order.production_site)
    return sla.add_working_time(order.last_event_at, limits.of(stage), zone)


def recompute(name: str, chunk: int = 2000) -> int:
    """Apply an edited threshold to the orders it governs; returns how many were updated."""
    forget_thresholds()
    limits = thresholds()
    if name == Threshold.CARRIER_QUIET:
        orders = CardOrder.objects.filter(stage=lifecycle.CARD_SHIPPED)
    elif name == Threshold.NEVER_HEARD:
        orders = CardOrder.objects.filter(last_event_at__isnull=True)
    else:
        stages = [name, ""] if name == lifecycle.CARD_PROD_REQUESTED else [name]
        orders = CardOrder.objects.filter(terminal=False, stage__in=stages)
    ids = list(orders.values_list("pk", flat=True))
    for start in range(0, len(ids), chunk):
        with transaction.atomic():
            # Locked in the ingest's order (issuer, card) so the two never deadlock, and so a
            # delivery landing meanwhile is not overwritten with figures from a stale copy.
            batch = list(
                CardOrder.objects.select_for_update()
                .filter(pk__in=ids[start : start + chunk])
                .order_by("issuer_id", "card_id")
            )
            for order in batch:
                update(order, limits)
            CardOrder.objects.bulk_update(batch, ["silent_after", "attention_since"])
    return len(ids)

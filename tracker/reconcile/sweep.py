"""The missed-notification sweep (`manage.py reconcile`): find the orders whose news may be
missing and have the task workers ask D1 about them (REFERENCE §6).

- **Which cards**: open orders (not terminal) silent past their stage's threshold
  (`silent_after`), late ones first, then the longest overdue. Left out: cards D1 answered 404
  for, until an event arrives after that answer; cards D1 confirmed within
  TRACKER_RECONCILE_RECHECK_AFTER; cards another running sweep holds.
- **Claims**: a sweep takes its cards by inserting SweepClaim rows keyed by the order, with ON
  CONFLICT DO NOTHING, so two sweeps running at once split the work and never both take a card.
  Claims are kept until the sweep ends, so a card that stays silent is checked once per sweep.
  A sweep that dies leaves claims behind; they lapse once its heartbeat is older than
  TRACKER_RECONCILE_CLAIM_TIMEOUT.
- **Waves**: the sweep keeps about TRACKER_RECONCILE_WAVE seconds of D1_MAX_RPS queued ahead of
  the workers, in refresh_cards tasks of TRACKER_RECONCILE_BATCH cards, and tops the queue up as
  they finish: the budget never idles between waves, and little is queued when it must stop.
- **Stopping early**: when the D1 circuit breaker opens (or no worker makes progress, or the
  command is interrupted) the sweep stops, records why, and releases the cards not checked yet;
  the tasks already queued skip them, and the next sweep takes them again.

The rate towards D1 is not this module's business: every D1 attempt of the background profile
waits for its turn in the shared D1_MAX_RPS budget (tracker/d1/budget.py), whichever process or
thread makes it.
"""

import logging
import math
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from tracker import tasks
from tracker.d1.client import breaker_state
from tracker.models import CardOrder, Sweep, SweepClaim

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often the sweep looks at its workers' progress and the breaker
_HEARTBEAT_SECONDS = 5.0


def candidates(now: datetime, issuer_id: str = "", every_open: bool = False) -> QuerySet[CardOrder]:
    """Orders whose news may be missing, most urgent first: late ones, then the longest overdue.

    `every_open`: every open order, silent or not (after D1 reported lost notifications).
    """
    recheck_before = now - timedelta(seconds=settings.TRACKER_RECONCILE_RECHECK_AFTER)
    silent = Q() if every_open else Q(silent_after__lte=now)
    orders = (
        CardOrder.objects.filter(silent, terminal=False)
        # A card D1 does not know is asked about again only once news of it arrived since.
        .filter(Q(unknown_to_d1=False) | Q(last_event_at__gt=F("last_checked_at")))
        .filter(Q(last_checked_at__isnull=True) | Q(last_checked_at__lt=recheck_before))
        .exclude(Exists(SweepClaim.objects.filter(order=OuterRef("pk"))))
    )
    if issuer_id:
        orders = orders.filter(issuer_id=issuer_id)
    late_first = Case(When(late_after__lt=now, then=Value(0)), default=Value(1))
    return orders.order_by(late_first, "silent_after", "pk")


def recent(count: int = 5) -> list[Sweep]:
    """The last sweeps, newest first."""
    return list(Sweep.objects.order_by("-started_at", "-id")[:count])


def run(
    *,
    issuer_id: str = "",
    limit: int | None = None,
    stop: threading.Event | None = None,
    every_open: bool = False,
) -> Sweep:
    """One sweep, to the end or until it must stop early; returns its record."""
    stop = stop or threading.Event()
    abandon_lost()
    sweep = Sweep.objects.create(issuer_id=issuer_id, limit=limit)
    reason, detail = Sweep.Stop.INTERRUPTED, "the sweep failed; see the log"
    try:
        reason, detail = _drive(sweep, stop, every_open)
    finally:
        _finish(sweep, reason, detail)
    return sweep


def run_every(
    interval: float,
    stop: threading.Event,
    *,
    issuer_id: str = "",
    limit: int | None = None,
    every_open: bool = False,
) -> Iterator[Sweep]:
    """A sweep every `interval` seconds (start to start; the first after one interval) until
    `stop` is set. A database error ends one sweep, not the loop."""
    next_at = time.monotonic() + interval
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        next_at = time.monotonic() + interval
        close_old_connections()
        try:
            yield run(issuer_id=issuer_id, limit=limit, stop=stop, every_open=every_open)
        except DatabaseError:
            logger.exception("reconcile: the sweep failed; trying again in %ds", interval)


def abandon_lost(now: datetime | None = None) -> int:
    """Close the sweeps whose process died (no heartbeat for TRACKER_RECONCILE_CLAIM_TIMEOUT)
    and give their cards back."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.TRACKER_RECONCILE_CLAIM_TIMEOUT)
    lost = list(
        Sweep.objects.filter(finished_at__isnull=True, heartbeat_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    if lost:
        SweepClaim.objects.filter(sweep_id__in=lost).delete()
        Sweep.objects.filter(pk__in=lost).update(
            finished_at=now,
            stop_reason=Sweep.Stop.LOST,
            stop_detail=f"no sign of life since before {cutoff:%Y-%m-%d %H:%M:%S} UTC",
        )
        logger.warning("reconcile: sweeps %s had died; their cards are free again", lost)
    return len(lost)


def wave_size() -> int:
    """Cards to keep queued ahead of the workers: TRACKER_RECONCILE_WAVE seconds of budget."""
    ahead = math.ceil(settings.D1_MAX_RPS * settings.TRACKER_RECONCILE_WAVE)
    return max(ahead, settings.TRACKER_RECONCILE_BATCH)


def _drive(sweep: Sweep, stop: threading.Event, every_open: bool = False) -> tuple[str, str]:
    """Claim and queue cards in waves until none are left; return why it stopped early, if so."""
    wave = wave_size()
    exhausted = False
    last_done, progress_at, heartbeat_at = 0, time.monotonic(), time.monotonic()
    while True:
        if stop.is_set():
            return Sweep.Stop.INTERRUPTED, "stopped by a signal"
        breaker = breaker_state()
        if breaker["state"] == "open":
            return Sweep.Stop.BREAKER, (
                f"D1 circuit breaker open since {breaker['opened_at']}"
                f" after {breaker['failures']} failed calls"
            )
        sweep.refresh_from_db(fields=["queued", "checked", "failed", "skipped"])
        outstanding = sweep.queued - sweep.done
        if not exhausted and outstanding <= wave // 2:
            room = wave - outstanding
            if sweep.limit is not None:
                room = min(room, sweep.limit - sweep.queued)
            claimed, found = _claim(sweep, room, every_open) if room > 0 else ([], False)
            exhausted = not found
            if claimed:
                _enqueue(sweep, claimed)
                continue  # look at the progress again before waiting
        if exhausted and outstanding <= 0:
            return "", ""
        if sweep.done != last_done:
            last_done, progress_at = sweep.done, time.monotonic()
        elif time.monotonic() - progress_at > settings.TRACKER_RECONCILE_STALL_TIMEOUT:
            return Sweep.Stop.STALLED, (
                f"no card finished for {settings.TRACKER_RECONCILE_STALL_TIMEOUT}s with"
                f" {outstanding} queued: is a task worker (manage.py db_worker) running?"
            )
        if time.monotonic() - heartbeat_at > _HEARTBEAT_SECONDS:
            heartbeat_at = time.monotonic()
            Sweep.objects.filter(pk=sweep.pk).update(heartbeat_at=timezone.now())
        stop.wait(POLL_SECONDS)


def _claim(sweep: Sweep, count: int, every_open: bool = False) -> tuple[list[int], bool]:
    """Take up to `count` cards for this sweep, most urgent first: (the ids it won, whether
    there were any candidates at all). Another sweep may win some of the same cards."""
    found = candidates(timezone.now(), sweep.issuer_id, every_open)
    wanted = list(found.values_list("pk", flat=True)[:count])
    if not wanted:
        return [], False
    SweepClaim.objects.bulk_create(
        [SweepClaim(order_id=pk, sweep=sweep) for pk in wanted], ignore_conflicts=True
    )
    won = set(
        SweepClaim.objects.filter(sweep=sweep, order_id__in=wanted).values_list(
            "order_id", flat=True
        )
    )
    Sweep.objects.filter(pk=sweep.pk).update(queued=F("queued") + len(won))
    return [pk for pk in wanted if pk in won], True


def _enqueue(sweep: Sweep, order_ids: list[int]) -> None:
    size = settings.TRACKER_RECONCILE_BATCH
    for start in range(0, len(order_ids), size):
        tasks.refresh_cards.enqueue(sweep_id=sweep.pk, order_ids=order_ids[start : start + size])


def _finish(sweep: Sweep, reason: str, detail: str) -> None:
    # Released first: the tasks still queued then skip these cards, and the next sweep takes them.
    SweepClaim.objects.filter(sweep=sweep).delete()
    Sweep.objects.filter(pk=sweep.pk).update(
        finished_at=timezone.now(), stop_reason=reason, stop_detail=detail
    )
    sweep.refresh_from_db()
    summary = (
        f"{sweep.checked} checked, {sweep.repaired} repaired, {sweep.not_found} unknown to D1,"
        f" {sweep.failed} failed"
    )
    if reason:
        logger.warning("reconcile: sweep %d stopped early (%s): %s", sweep.pk, detail, summary)
    elif sweep.repaired:
        logger.warning(
            "reconcile: sweep %d: %s; %d orders were behind D1: notifications may be getting lost",
            sweep.pk,
            summary,
            sweep.repaired,
        )
    else:
        logger.info("reconcile: sweep %d: %s", sweep.pk, summary)

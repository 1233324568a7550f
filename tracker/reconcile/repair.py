"""The workers' side of reconciliation: ask D1 about cards and count what it said.

check() refreshes one card (the queue's bulk re-check and the sweep both use it). check_claimed()
does it for a batch of cards a sweep claimed, on TRACKER_RECONCILE_THREADS threads: a D1 call
mostly waits (on the network, and on its turn in the shared D1_MAX_RPS budget, which every
attempt spends whatever thread or process makes it), so a few threads per worker keep the budget
busy without a process per call. A card whose state the refresh changed is a *repair*: D1 knew
something Tracker had not been told, so a notification went missing; each one is logged at
WARNING with what changed.
"""

import enum
import itertools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F

from tracker import live
from tracker.d1.client import D1Error, D1NotFound, D1Unavailable, Profile, breaker_state
from tracker.models import CardOrder, Source, Sweep

# Named as before the move into tracker/reconcile/: operators filter the repair lines on it.
logger = logging.getLogger("tracker.repair")

# What a repair log line reports: the state an operator reads, never personal data.
_WATCHED = (
    "stage",
    "operation_status",
    "unrecognized_status",
    "shipment_status",
    "conflict",
    "due_date",
    "error_code",
)


class Outcome(enum.StrEnum):
    CHANGED = "changed"  # D1 knew more than Tracker: repaired
    UNCHANGED = "unchanged"
    NOT_FOUND = "not_found"  # D1 answered 404: the order is flagged unknown to D1
    FAILED = "failed"  # D1 could not be asked (unavailable, breaker open, refused, garbled)
    SKIPPED = "skipped"  # not asked: the sweep stopped before a worker got to the card


def check(issuer_id: str, card_id: str, source: Source) -> Outcome:
    """Refresh one card from D1 with the background profile and say how it went."""
    try:
        refreshed = live.refresh(issuer_id, card_id, source=source, profile=Profile.BACKGROUND)
    except D1NotFound:
        return Outcome.NOT_FOUND
    except D1Unavailable:
        return Outcome.FAILED  # the client logged it at WARNING, with its correlation id
    except (D1Error, ValueError) as e:
        logger.warning("refresh of %s/%s failed: %s", issuer_id, card_id, e)
        return Outcome.FAILED
    return Outcome.CHANGED if refreshed.changed else Outcome.UNCHANGED


def check_claimed(sweep_id: int, order_ids: Iterable[int]) -> dict[str, int]:
    """Refresh the cards of `order_ids` that sweep `sweep_id` still claims, adding the outcomes
    to the sweep as they come. Cards it no longer claims (it stopped) are skipped."""
    order_ids = list(order_ids)
    # The state before the refresh comes with the claim check: one query for the batch.
    claimed = list(
        CardOrder.objects.filter(pk__in=order_ids, sweep_claim__sweep_id=sweep_id).values(
            "pk", "issuer_id", "card_id", *_WATCHED
        )
    )
    tally = _Tally(sweep_id)
    tally.add(Outcome.SKIPPED, len(order_ids) - len(claimed))
    halt = threading.Event()
    if breaker_state()["state"] == "open":
        halt.set()  # D1 is down: the sweep is about to stop, and these would fail anyway

    def one(before: dict[str, Any]) -> Outcome:
        outcome = Outcome.SKIPPED
        try:
            if not halt.is_set():
                outcome = _sweep_one(before)
                if outcome is Outcome.FAILED and breaker_state()["state"] == "open":
                    halt.set()
        except Exception:
            # Counted all the same: the sweep waits until every card it queued is accounted for.
            logger.exception(
                "reconcile: checking %s/%s failed", before["issuer_id"], before["card_id"]
            )
            outcome = Outcome.FAILED
        finally:
            tally.add(outcome)
        return outcome

    try:
        _in_threads(claimed, one, settings.TRACKER_RECONCILE_THREADS)
    finally:
        tally.flush()
    return {str(outcome): count for outcome, count in tally.total.items() if count}


class _Tally:
    """Outcomes added to the sweep's counters about every FLUSH_SECONDS: the sweep sees steady
    progress without one UPDATE of its row per card."""

    FLUSH_SECONDS = 0.5

    def __init__(self, sweep_id: int) -> None:
        self.sweep_id = sweep_id
        self.total: Counter[Outcome] = Counter()
        self._pending: Counter[Outcome] = Counter()
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()

    def add(self, outcome: Outcome, cards: int = 1) -> None:
        with self._lock:
            self.total[outcome] += cards
            self._pending[outcome] += cards
            due = time.monotonic() - self._flushed_at >= self.FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._flushed_at = time.monotonic()
        counters = {
            "checked": pending[Outcome.CHANGED]
            + pending[Outcome.UNCHANGED]
            + pending[Outcome.NOT_FOUND],
            "repaired": pending[Outcome.CHANGED],
            "not_found": pending[Outcome.NOT_FOUND],
            "failed": pending[Outcome.FAILED],
            "skipped": pending[Outcome.SKIPPED],
        }
        changes = {name: F(name) + count for name, count in counters.items() if count}
        if changes:
            Sweep.objects.filter(pk=self.sweep_id).update(**changes)


def _sweep_one(before: dict[str, Any]) -> Outcome:
    issuer_id, card_id = before["issuer_id"], before["card_id"]
    outcome = check(issuer_id, card_id, Source.RECONCILE)
    if outcome is Outcome.CHANGED:
        after = CardOrder.objects.filter(pk=before["pk"]).values(*_WATCHED).first() or {}
        changes = [
            f"{name} {_shown(before.get(name))} → {_shown(after.get(name))}"
            for name in _WATCHED
            if before.get(name) != after.get(name)
        ]
        logger.warning(
            "reconcile: repaired %s/%s, D1 knew more than Tracker (a notification was lost): %s",
            issuer_id,
            card_id,
            "; ".join(changes) or "timeline only",
        )
    return outcome


def _shown(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def _in_threads[T, R](items: list[T], work: Callable[[T], R], threads: int) -> list[R]:
    """work(item) for every item on the process's pool of `threads` threads (in place for one).

    The pool outlives the task: its threads keep their database connections from one batch to
    the next, as a worker's main thread does, instead of connecting anew for every batch.
    """
    if threads <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    generation = next(_batches)

    def tidy_then_work(item: T) -> R:
        # Once per batch in each thread, what db_worker does between tasks: drop a connection
        # that broke or outlived CONN_MAX_AGE.
        if getattr(_thread_state, "generation", None) != generation:
            _thread_state.generation = generation
            close_old_connections()
        return work(item)

    return list(_pool(threads).map(tidy_then_work, items))


_batches = itertools.count()
_thread_state = threading.local()
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="reconcile")
        return _pools[key]

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
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import F

from tracker import live
from tracker.d1.client import D1Error, D1NotFound, D1Unavailable, Profile, breaker_state
from tracker.models import CardOrder, Source, Sweep

logger = logging.getLogger(__name__)

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
    """Refresh the cards of `order_ids` that sweep `sweep_id` still claims, counting each
    outcome on the sweep as it comes. Cards it no longer claims (it stopped) are skipped."""
    order_ids = list(order_ids)
    claimed = list(
        CardOrder.objects.filter(pk__in=order_ids, sweep_claim__sweep_id=sweep_id).values_list(
            "pk", "issuer_id", "card_id"
        )
    )
    _count(sweep_id, Outcome.SKIPPED, len(order_ids) - len(claimed))
    halt = threading.Event()
    if breaker_state()["state"] == "open":
        halt.set()  # D1 is down: the sweep is about to stop, and these would fail anyway

    def one(card: tuple[int, str, str]) -> Outcome:
        outcome = Outcome.SKIPPED
        try:
            if not halt.is_set():
                outcome = _sweep_one(*card)
                if outcome is Outcome.FAILED and breaker_state()["state"] == "open":
                    halt.set()
        except Exception:
            # Counted all the same: the sweep waits until every card it queued is accounted for.
            logger.exception("reconcile: checking %s/%s failed", card[1], card[2])
            outcome = Outcome.FAILED
        finally:
            _count(sweep_id, outcome)
        return outcome

    outcomes = Counter(_in_threads(claimed, one, settings.TRACKER_RECONCILE_THREADS))
    outcomes[Outcome.SKIPPED] += len(order_ids) - len(claimed)
    return {str(outcome): count for outcome, count in outcomes.items() if count}


def _count(sweep_id: int, outcome: Outcome, cards: int = 1) -> None:
    """Add one card's outcome to the sweep (per card, so the sweep sees steady progress)."""
    if not cards:
        return
    counters = {
        "checked": outcome in (Outcome.CHANGED, Outcome.UNCHANGED, Outcome.NOT_FOUND),
        "repaired": outcome is Outcome.CHANGED,
        "not_found": outcome is Outcome.NOT_FOUND,
        "failed": outcome is Outcome.FAILED,
        "skipped": outcome is Outcome.SKIPPED,
    }
    Sweep.objects.filter(pk=sweep_id).update(
        **{name: F(name) + cards for name, counts in counters.items() if counts}
    )


def _sweep_one(order_id: int, issuer_id: str, card_id: str) -> Outcome:
    before = _watched(order_id)
    outcome = check(issuer_id, card_id, Source.RECONCILE)
    if outcome is Outcome.CHANGED:
        after = _watched(order_id)
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


def _watched(order_id: int) -> dict[str, Any]:
    return CardOrder.objects.filter(pk=order_id).values(*_WATCHED).first() or {}


def _shown(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def _in_threads[T, R](items: list[T], work: Callable[[T], R], threads: int) -> list[R]:
    """work(item) for every item, on up to `threads` threads; one thread runs them in place."""
    if threads <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    pending: queue.SimpleQueue[T] = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    results: list[R] = []
    failures: list[BaseException] = []

    def drain() -> None:
        try:
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                results.append(work(item))
        except BaseException as e:  # noqa: BLE001 - raised again in the calling thread
            failures.append(e)
        finally:
            # Each thread opened its own database connection; none may outlive it.
            connections.close_all()

    pool = [threading.Thread(target=drain) for _ in range(min(threads, len(items)))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise failures[0]
    return results

"""The applier: notification bodies from the inbox to the card orders, in batches.

The endpoint only stores a body and answers 204; an applier (`manage.py apply_notifications`,
any number of them, on any host) takes the pending bodies in arrival order, a batch at a time
(SELECT … FOR UPDATE SKIP LOCKED, so two appliers never take the same body), applies all their
operations through one ingest call and marks the bodies done, in one transaction. Killed
mid-batch, its transaction rolls back with the connection and the bodies are taken again:
nothing is lost and nothing is applied twice.

An idle applier sleeps until PostgreSQL notifies it (LISTEN, see inbox.store) or
TRACKER_APPLY_POLL has passed. On SQLite the web process applies inline after each answer.
"""

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from tracker import inbox, transactions
from tracker.models import InboxItem, Source

logger = logging.getLogger(__name__)

_PENDING = InboxItem.Outcome.RECEIVED
_TRANSIENT = (OperationalError, InterfaceError)
_GATHER_SECONDS = 0.1


def apply_pending(limit: int | None = None) -> int:
    """Apply one batch of pending bodies, oldest first; return how many were taken (0: none).

    A batch that fails for another reason than a transient one (a bug, a constraint) is split:
    each body is tried alone, and the one that fails alone is marked failed, so one bad body
    never holds up the others. Transient errors (lock timeout, lost connection) propagate and
    leave every body pending.
    """
    limit = limit or settings.TRACKER_APPLY_BATCH
    # Its own transaction, or a savepoint inside a caller's: a failed batch leaves nothing.
    nested = transaction.get_connection().in_atomic_block
    try:
        return transactions.retried(partial(_apply_batch, limit, None, nested))
    except _TRANSIENT:
        raise
    except Exception:
        logger.exception("applier batch failed; applying its bodies one by one")
    taken = 0
    for pk in _pending_ids(limit):
        try:
            taken += transactions.retried(partial(_apply_batch, 1, pk, nested))
        except _TRANSIENT:
            raise
        except Exception as e:
            logger.exception("inbox %s could not be applied; marked failed", pk)
            inbox.mark_failed(pk, e)
            taken += 1
    return taken


def drain(max_batches: int | None = None) -> int:
    """Apply batches until the inbox has no pending body (or `max_batches`); bodies taken."""
    total, batches = 0, 0
    while max_batches is None or batches < max_batches:
        taken = apply_pending()
        if not taken:
            break
        total += taken
        batches += 1
    return total


def _pending_ids(limit: int) -> list[int]:
    pending = InboxItem.objects.filter(outcome=_PENDING).order_by("pk")
    return list(pending.values_list("pk", flat=True)[:limit])


def _apply_batch(limit: int, pk: int | None, nested: bool) -> int:
    with transaction.atomic(savepoint=nested):
        return _apply_locked(limit, pk)


def _apply_locked(limit: int, pk: int | None) -> int:
    pending = InboxItem.objects.filter(outcome=_PENDING)
    if pk is not None:
        pending = pending.filter(pk=pk)
    # Arrival order; bodies another applier holds are skipped, not waited for.
    items = list(
        pending.select_for_update(skip_locked=True)
        .only("pk", "issuer_id", "received_at", "body")
        .order_by("pk")[:limit]
    )
    if not items:
        return 0
    reports = inbox.apply_bodies(items, Source.NOTIFICATION)
    inbox.record(items, reports, timezone.now())
    return len(items)


@dataclass(frozen=True)
class Lag:
    """How far the appliers are behind: pending bodies, and the age of the oldest."""

    pending: int
    oldest_received_at: datetime | None
    now: datetime

    @property
    def seconds(self) -> float:
        if self.oldest_received_at is None:
            return 0.0
        return max(0.0, (self.now - self.oldest_received_at).total_seconds())

    @property
    def ready(self) -> bool:
        return self.seconds <= settings.TRACKER_APPLY_LAG_LIMIT


def apply_lag(now: datetime | None = None) -> Lag:
    """The apply lag: bodies answered but not applied yet, and how long the oldest has waited."""
    pending = InboxItem.objects.filter(outcome=_PENDING)
    oldest = pending.order_by("pk").values_list("received_at", flat=True).first()
    count = pending.count() if oldest is not None else 0
    return Lag(count, oldest, now or timezone.now())


# --- The applier process -------------------------------------------------------------------


def run(stop: Callable[[], bool], *, poll: float | None = None) -> None:
    """Apply pending bodies until `stop()` is true: batch after batch while there is work, then
    wait for a NOTIFY or `poll` seconds. Transient database errors are logged and waited out."""
    poll = settings.TRACKER_APPLY_POLL if poll is None else poll
    waiter = _Waiter()
    while not stop():
        try:
            taken = apply_pending()
            if taken >= settings.TRACKER_APPLY_BATCH:
                continue  # a backlog: the next batch at once
            if taken:
                # A trickle: let a few more bodies gather, so that a batch's fixed cost (nine
                # statements) is shared by many instead of paid per body. Well within the
                # apply lag budget (≤ 1 s).
                time.sleep(min(poll, _GATHER_SECONDS))
                continue
            waiter.wait(poll)
        except _TRANSIENT as e:
            logger.warning("applier: database unavailable, waiting: %s", _summary(e))
            _reset_connection()
            time.sleep(poll)


class _Waiter:
    """Sleeps until PostgreSQL notifies WAKE_CHANNEL, or the timeout (plain sleep elsewhere)."""

    def __init__(self) -> None:
        self._listening: Any = None  # the driver connection LISTEN was issued on

    def wait(self, timeout: float) -> None:
        if connection.vendor != "postgresql":
            time.sleep(timeout)
            return
        connection.ensure_connection()
        raw = connection.connection
        if raw is not self._listening:
            assert not transaction.get_connection().in_atomic_block
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {inbox.WAKE_CHANNEL}")
            self._listening = raw
        # Notifications that came during the batch are queued: the first returns at once.
        for _ in raw.notifies(timeout=timeout, stop_after=1):
            pass


def _reset_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()


def _summary(error: Exception) -> str:
    return f"{error.__class__.__name__}: {next(iter(str(error).splitlines()), '')}"

"""The one way to run a transaction that PostgreSQL may abort for a deadlock or a serialization
failure: from scratch again, a few times, apart at random."""

import logging
import random
import threading
import time
from collections.abc import Callable

from django.db import OperationalError, transaction

logger = logging.getLogger(__name__)

ATTEMPTS = 5
_RETRYABLE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


class _Retries:
    """How many transactions this process ran again; the concurrency tests assert on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1


retries = _Retries()


def retried[T](work: Callable[[], T]) -> T:
    """Run `work` in a transaction, again from scratch if PostgreSQL aborts it for a deadlock or
    a serialization failure; any other error, or the last attempt's, propagates.

    Safe because nothing of an aborted transaction was committed. Inside a caller's transaction
    `work` just joins it: the outermost caller is the one that retries.
    """
    if transaction.get_connection().in_atomic_block:
        return work()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return work()
        except OperationalError as e:
            if attempt == ATTEMPTS or not is_retryable(e):
                raise
            retries.add()
            logger.info("transaction retried after %s (attempt %d)", e.__class__.__name__, attempt)
            # Apart at random, so that the transactions that deadlocked do not meet again in step.
            time.sleep(random.uniform(0, 0.02 * attempt))
    raise AssertionError("unreachable")


def is_retryable(error: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction can simply run again."""
    return getattr(error.__cause__, "sqlstate", None) in _RETRYABLE

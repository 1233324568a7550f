"""The circuit breaker in front of D1, shared by every process through the Django cache.

After D1_BREAKER_THRESHOLD consecutive failed calls (D1 unreachable, timing out or answering 5xx
after the retries) it opens: calls fail at once with D1BreakerOpen instead of making an agent wait
for a D1 that is down, and the background sweep stops hammering it. After D1_BREAKER_COOLDOWN
seconds one caller, and only one, is let through as a probe; its success closes the breaker, its
failure opens it for another cool-down. Any answer from D1, even a 404, counts as a success: the
breaker is about reachability, not about the card.

The read-modify-write of the failure count is not atomic on every cache backend. A lost increment
only delays opening by one call, which is harmless; the probe slot uses cache.add, which is.
"""

import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache

from tracker.d1.errors import D1BreakerOpen

_STATE = "tracker:d1:breaker"
_PROBE = "tracker:d1:breaker:probe"
_admitted = threading.local()
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def admit(probe_seconds: float) -> str | None:
    """Let a call through or raise D1BreakerOpen; returns a probe ticket when this call probes."""
    state = cache.get(_STATE) or {}
    # Remembered for record_success: when the breaker was closed and clean at admission, the
    # call's success has nothing to reset, which saves a cache read on every good call.
    _admitted.clean = not state
    opened_at = state.get("opened_at")
    if opened_at is None:
        return None
    waited = time.time() - opened_at
    if waited < settings.D1_BREAKER_COOLDOWN:
        raise D1BreakerOpen(
            f"D1 circuit breaker open after {state.get('failures', 0)} failures;"
            f" next try in {settings.D1_BREAKER_COOLDOWN - waited:.0f}s"
        )
    ticket = secrets.token_hex(8)
    # The slot outlives a probe that crashes without reporting, so the breaker cannot stick.
    if cache.add(_PROBE, ticket, timeout=int(probe_seconds) + 2):
        return ticket
    raise D1BreakerOpen("D1 circuit breaker half-open: another call is probing D1")


def record_success(ticket: str | None) -> None:
    """D1 answered: close the breaker (writes only when it was not already closed and clean)."""
    if ticket is None and getattr(_admitted, "clean", False):
        return
    if ticket is not None or cache.get(_STATE):
        cache.delete_many([_STATE, _PROBE])


def record_failure(ticket: str | None) -> None:
    """D1 was unavailable for a whole call: count it, open at the threshold or after a probe."""
    state = cache.get(_STATE) or {}
    failures = state.get("failures", 0) + 1
    opened_at = state.get("opened_at")
    if ticket is not None or (opened_at is None and failures >= settings.D1_BREAKER_THRESHOLD):
        opened_at = time.time()
    cache.set(_STATE, {"failures": failures, "opened_at": opened_at}, timeout=None)
    release(ticket)


def release(ticket: str | None) -> None:
    """Give the probe slot back when the probe ended without telling anything about D1."""
    if ticket is not None and cache.get(_PROBE) == ticket:
        cache.delete(_PROBE)


def state() -> dict[str, Any]:
    """`{"state": closed|open|half_open, "failures": n, "opened_at": ISO 8601 or None}`."""
    current = cache.get(_STATE) or {}
    opened_at = current.get("opened_at")
    if opened_at is None:
        name = CLOSED
    elif time.time() - opened_at < settings.D1_BREAKER_COOLDOWN:
        name = OPEN
    else:
        name = HALF_OPEN
    return {
        "state": name,
        "failures": current.get("failures", 0),
        "opened_at": None
        if opened_at is None
        else datetime.fromtimestamp(opened_at, UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
    }

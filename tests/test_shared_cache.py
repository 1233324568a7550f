"""The shared cache as a tested configuration: the rate budget keeps the server's clock, and
Redis works through redis-py's public API (run this module with REDIS_URL: make test-redis)."""

import time

import pytest
from django.conf import settings
from django.core.cache import cache

from tracker.d1 import budget

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cache]


def test_a_caller_whose_clock_runs_ahead_does_not_hold_up_the_others(monkeypatch):
    """Reservations are spaced on the server's clock: a host an hour ahead takes its turn
    without pushing everyone else's an hour into the future."""
    name = f"skew-{time.monotonic_ns()}"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    budget.acquire(name, rate=10)
    monkeypatch.setattr(time, "time", real)
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    waited = budget.acquire(name, rate=10)
    assert waited < 1.0, f"a clock skew of one hour made the next caller wait {waited:.0f}s"
    assert slept in ([], [waited])


def test_consecutive_reservations_are_spaced_by_the_rate(monkeypatch):
    name = f"spacing-{time.monotonic_ns()}"
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    waits = [budget.acquire(name, rate=10) for _ in range(5)]
    # Five turns at 10/s (with 5% headroom): the last one is about 0.42 s away.
    assert waits[0] < 0.05
    assert 0.35 < waits[-1] < 0.6
    assert waits == sorted(waits)


def test_redis_is_reached_through_the_public_client_when_configured():
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set (make test-redis sets it)")
    server = budget._redis()
    assert server is not None and server.ping()
    cache.set("tracker:probe", "ok", 5)
    assert cache.get("tracker:probe") == "ok"

"""The rate budget towards D1 for background work, shared by every process (`D1_MAX_RPS`).

Each call reserves the next free moment and sleeps until it comes (GCRA: the reservations are
spaced 1/rate apart), so calls never bunch up however many workers ask at once, and no
one-second window ever holds more than the budget. The reservation is atomic: a Lua script in
Redis when `REDIS_URL` is set, otherwise one UPDATE … RETURNING of a row in the database (where
the default cache lives too).
"""

import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from tracker.models import RateBudget

# Reservations are spaced slightly wider than 1/rate: a caller that wakes late (a busy CPU, a
# slow connection) sends late, and the next one on time must not make one call too many in a
# second. 5% absorbs a delay of about 50 ms whatever the rate.
_HEADROOM = 0.95

_RESERVE = """
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]))
redis.call('SET', KEYS[1], tostring(slot + tonumber(ARGV[2])), 'EX', 3600)
return tostring(slot)
"""


def acquire(name: str = "d1", rate: float | None = None) -> float:
    """Wait for this process's turn within the budget; return the seconds waited."""
    rate = rate or settings.D1_MAX_RPS
    interval = 1.0 / (rate * _HEADROOM)
    now = time.time()
    redis = _redis()
    slot = (
        _reserve_in_redis(redis, name, now, interval)
        if redis
        else _reserve_in_db(name, now, interval)
    )
    wait = max(0.0, slot - time.time())
    if wait:
        time.sleep(wait)
    return wait


def _redis() -> Any | None:
    """The Redis client behind the cache (redis-py, untyped), or None on the database cache."""
    client_factory = getattr(cache, "_cache", None)
    if client_factory is None or not hasattr(client_factory, "get_client"):
        return None
    return client_factory.get_client(write=True)


def _reserve_in_redis(redis: Any, name: str, now: float, interval: float) -> float:
    key = cache.make_and_validate_key(f"tracker:budget:{name}")
    return float(redis.eval(_RESERVE, 1, key, repr(now), repr(interval)))


def _reserve_in_db(name: str, now: float, interval: float) -> float:
    # One statement, atomic on its own: the row's lock lasts only as long as the UPDATE.
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    table = RateBudget._meta.db_table
    sql = (
        f"UPDATE {table} SET next_at = {greatest}(next_at, %s) + %s WHERE name = %s"
        " RETURNING next_at"
    )
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, interval, name])
            row = cursor.fetchone()
        if row is not None:
            return float(row[0]) - interval
        RateBudget.objects.get_or_create(name=name)  # the first reservation of this budget
    raise RuntimeError(f"rate budget {name!r} could not be reserved")

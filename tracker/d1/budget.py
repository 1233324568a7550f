"""The rate budget towards D1 for background work, shared by every process (`D1_MAX_RPS`).

Each call reserves the next free moment and sleeps until it comes (GCRA: the reservations are
spaced 1/rate apart), so calls never bunch up however many workers ask at once, and no
one-second window ever holds more than the budget. The reservation is atomic: a Lua script in
Redis when `REDIS_URL` is set, otherwise one UPDATE … RETURNING of a row in the database (where
the default cache lives too). Either way the clock is the server's.
"""

import time

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from tracker.models import RateBudget

# Reservations are spaced slightly wider than 1/rate: a caller that wakes late (a busy CPU, a
# slow connection) sends late, and the next one on time must not make one call too many in a
# second. 5% absorbs a delay of about 50 ms whatever the rate.
_HEADROOM = 0.95

# The server's clock, not the caller's: processes on hosts whose clocks disagree still space
# their calls correctly. Redis allows TIME before a write in a script (effects replication,
# the default since Redis 5).
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
redis.call('SET', KEYS[1], tostring(slot + tonumber(ARGV[1])), 'EX', 3600)
return {tostring(slot), tostring(now)}
"""
_clients: dict[str, redis.Redis] = {}


def acquire(name: str = "d1", rate: float | None = None) -> float:
    """Wait for this process's turn within the budget; return the seconds waited."""
    rate = rate or settings.D1_MAX_RPS
    interval = 1.0 / (rate * _HEADROOM)
    server = _redis()
    asked = time.monotonic()
    slot, now = (
        _reserve_in_redis(server, name, interval) if server else _reserve_in_db(name, interval)
    )
    # The server read its clock while this process waited for the answer: what has passed
    # since is already part of the wait (a busy process that got its answer late must not
    # send late, bunching with the next caller).
    wait = max(0.0, slot - now - (time.monotonic() - asked))
    if wait:
        time.sleep(wait)
    return wait


def _redis() -> redis.Redis | None:
    """A client of the Redis server behind the default cache, if it is one (redis-py's public
    API; Django's cache backend keeps its own client private)."""
    config = settings.CACHES["default"]
    if not config["BACKEND"].endswith("RedisCache"):
        return None
    location = config["LOCATION"]
    location = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
    if location not in _clients:
        _clients[location] = redis.Redis.from_url(location)
    return _clients[location]


def _reserve_in_redis(server: redis.Redis, name: str, interval: float) -> tuple[float, float]:
    key = cache.make_and_validate_key(f"tracker:budget:{name}")
    slot, now = server.eval(_RESERVE, 1, key, repr(interval))
    return float(slot), float(now)


def _reserve_in_db(name: str, interval: float) -> tuple[float, float]:
    # One statement, atomic on its own: the row's lock lasts only as long as the UPDATE. The
    # database server's clock, like Redis's above.
    if connection.vendor == "postgresql":
        greatest, clock = "GREATEST", "EXTRACT(EPOCH FROM clock_timestamp())::float8"
    else:
        greatest, clock = "MAX", "((julianday('now') - 2440587.5) * 86400.0)"
    table = RateBudget._meta.db_table
    sql = (
        f"UPDATE {table} SET next_at = {greatest}(next_at, {clock}) + %s WHERE name = %s"
        f" RETURNING next_at, {clock}"
    )
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, [interval, name])
            row = cursor.fetchone()
        if row is not None:
            return row[0] - interval, row[1]
        RateBudget.objects.get_or_create(name=name)  # the first reservation of this budget
    raise RuntimeError(f"rate budget {name!r} could not be reserved")

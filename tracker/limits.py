"""A per-user limit on asking D1 from the pages (live refresh, live lookup).

D1's quota and the circuit breaker are shared by everyone: one account refreshing in a loop (a
script, a stuck key) must not use them up for the others. Each user has a budget of
TRACKER_LIVE_PER_MINUTE requests a minute, refilled steadily (GCRA, like tracker/d1/budget.py),
shared by every process: a Lua script in Redis when `REDIS_URL` is set, otherwise one
UPDATE … RETURNING of a row in the database. One round trip a request.
"""

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from tracker.d1.budget import _redis
from tracker.models import RateBudget

logger = logging.getLogger(__name__)

_WINDOW = 60.0  # seconds

# Returns the new theoretical arrival time, or -1 (nothing changed) when the burst is spent.
_TAKE = """
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]))
local after = tat + tonumber(ARGV[2])
if after - tonumber(ARGV[1]) > tonumber(ARGV[3]) then return '-1' end
redis.call('SET', KEYS[1], tostring(after), 'EX', math.ceil(tonumber(ARGV[3])) + 1)
return tostring(after)
"""


def _taken(name: str, now: float, interval: float) -> bool:
    redis = _redis()
    if redis:
        key = cache.make_and_validate_key(f"tracker:budget:{name}")
        return float(redis.eval(_TAKE, 1, key, repr(now), repr(interval), repr(_WINDOW))) >= 0
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    table = RateBudget._meta.db_table
    # One statement, atomic on its own; no row comes back when the burst is spent.
    sql = (
        f"UPDATE {table} SET next_at = {greatest}(next_at, %s) + %s"
        f" WHERE name = %s AND {greatest}(next_at, %s) + %s - %s <= %s RETURNING next_at"
    )
    for _attempt in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, interval, name, now, interval, now, _WINDOW])
            if cursor.fetchone() is not None:
                return True
        _row, created = RateBudget.objects.get_or_create(name=name)
        if not created:
            return False
    return False


def live_refused(request: HttpRequest) -> HttpResponse | None:
    """None while the user is within TRACKER_LIVE_PER_MINUTE, else a 429 that says why."""
    per_minute = settings.TRACKER_LIVE_PER_MINUTE
    interval = _WINDOW / per_minute
    if _taken(f"live:{request.user.pk}", time.time(), interval):
        return None
    logger.warning(
        "user %s asked D1 more than %d times a minute: refused",
        request.user.get_username(),
        per_minute,
    )
    response = HttpResponse(
        _("Too many requests to D1 from your account. Try again in a minute."),
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(math.ceil(interval))
    return response

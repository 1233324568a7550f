"""A per-user limit on asking D1 from the pages (live refresh, live lookup).

D1's quota and the circuit breaker are shared by everyone: one account refreshing in a loop (a
script, a stuck key) must not use them up for the others. Counted per user and minute in the
shared cache, so every web process counts together.
"""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

_WINDOW = 60  # seconds


def live_refused(request: HttpRequest) -> HttpResponse | None:
    """None while the user is within TRACKER_LIVE_PER_MINUTE, else a 429 that says why."""
    now = time.time()
    key = f"tracker:live-rate:{request.user.pk}:{int(now // _WINDOW)}"
    cache.add(key, 0, _WINDOW * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired between add() and incr()
        cache.set(key, 1, _WINDOW * 2)
        count = 1
    if count <= settings.TRACKER_LIVE_PER_MINUTE:
        return None
    if count == settings.TRACKER_LIVE_PER_MINUTE + 1:
        logger.warning(
            "user %s asked D1 more than %d times in a minute: refused until the minute ends",
            request.user.get_username(),
            settings.TRACKER_LIVE_PER_MINUTE,
        )
    response = HttpResponse(
        _("Too many requests to D1 from your account. Try again in a minute."),
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(_WINDOW - int(now) % _WINDOW)
    return response

"""Signing in and staying signed in: password guessing slowed down (django-axes), sessions that
end after a while without activity, and local passwords that can be switched off under SSO.

Unlock a locked-out account with `manage.py axes_reset_username USERNAME` (or `axes_reset_ip
IP`, `axes_reset` for everything); see docs/security.md.
"""

import time
from collections.abc import Callable
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, QueryDict

from tracker import pan
from tracker.permission_cache import CachedPermissionsBackend

LAST_ACTIVITY = "tracker_last_activity"
# The stamp is written at most this often, not on every request (a session write each time).
_STAMP_EVERY = 60  # seconds
BACKGROUND_HEADER = "X-Tracker-Background"


def axes_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """The username axes counts failures under and stores: a card number typed in the username
    box is masked like anywhere else."""
    username = (credentials or {}).get("username")
    if username is None:
        username = request.POST.get("username", "")
    return pan.mask_pans(str(username))


def _masked_query(query: QueryDict) -> QueryDict:
    masked = QueryDict(mutable=True)
    for key, values in query.lists():
        masked.setlist(pan.mask_pans(key), [pan.mask_pans(value) for value in values])
    return masked


class MaskedAxesHandler(AxesDatabaseHandler):
    """axes' database handler, which keeps the login request's GET and POST data: masked here
    for card numbers (the password is never kept, AXES_SENSITIVE_PARAMETERS)."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs) -> None:
        if request is not None:
            request.GET = _masked_query(request.GET)
            request.POST = _masked_query(request.POST)
        super().user_login_failed(sender, credentials, request, **kwargs)


class IdleTimeoutMiddleware:
    """Sign out a session left without activity for TRACKER_IDLE_TIMEOUT seconds, besides the
    absolute SESSION_COOKIE_AGE. The card page's polls (BACKGROUND_HEADER) are not activity."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            now = time.time()
            last = request.session.get(LAST_ACTIVITY)
            if isinstance(last, int | float) and now - last > settings.TRACKER_IDLE_TIMEOUT:
                logout(request)  # LoginRequiredMiddleware then sends the browser to log in
            elif request.headers.get(BACKGROUND_HEADER) != "true" and (
                not isinstance(last, int | float) or now - last >= _STAMP_EVERY
            ):
                request.session[LAST_ACTIVITY] = now
        return self.get_response(request)


@receiver(user_logged_in)
def _signed_in(sender, request: HttpRequest, user, **kwargs) -> None:
    # Stamped at sign-in, saved with the new session: the first page costs no session write.
    if request is not None and hasattr(request, "session"):
        request.session[LAST_ACTIVITY] = time.time()


class PermissionsOnlyBackend(CachedPermissionsBackend):
    """Permissions as usual, but no password sign-in but a superuser's: the single sign-on
    signs people in, and a superuser can still get in when the identity provider is down."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username, password, **kwargs)
        return user if user is not None and user.is_superuser else None

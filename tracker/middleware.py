"""Show times in the user's own time zone; send htmx requests of an ended session to log in;
refuse a query string that carries a NUL character; keep staff pages out of caches.

static/tracker/tz.js stores the browser's IANA zone in the `tz` cookie; until it has (or when the
cookie holds something zoneinfo does not know) times are shown in TRACKER_DISPLAY_TZ.
"""

import zoneinfo
from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseRedirectBase
from django.shortcuts import resolve_url
from django.utils import timezone
from django.utils.translation import gettext as _
from django_htmx.http import HttpResponseClientRefresh

COOKIE = "tz"


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _zone(name: str) -> zoneinfo.ZoneInfo:
    # The cookie is user input: only a name from the zone database opens a file.
    if name not in _known_zones():
        name = settings.TRACKER_DISPLAY_TZ
    return zoneinfo.ZoneInfo(name)


class TimezoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with timezone.override(_zone(request.COOKIES.get(COOKIE, ""))):
            return self.get_response(request)


class HtmxLoginRedirectMiddleware:
    """When the session has ended, LoginRequiredMiddleware redirects to the login page, and the
    browser's XHR would follow it and htmx swap the login form into a part of the page (a card
    page left open polls D1 for hours). For htmx requests, ask htmx to reload the whole page
    instead: the browser lands on the login page and comes back to the page after logging in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.headers.get("HX-Request") == "true"
            and isinstance(response, HttpResponseRedirectBase)
            and response.url.startswith(resolve_url(settings.LOGIN_URL) + "?")
        ):
            return HttpResponseClientRefresh()
        return response


class RefuseNulMiddleware:
    """PostgreSQL cannot hold a NUL character in text, and no identifier contains one. A query
    string that carries one (a search box, an admin filter, a pasted link) is answered 400 naming
    the problem, before any view can pass it to the database and fail with a 500. Form fields
    refuse NUL on their own (Django's ProhibitNullCharactersValidator)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query:
            message = _("The address contains a NUL character (%00), which no value can hold.")
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class NoStoreMiddleware:
    """Pages show card data to signed-in staff: no browser or proxy cache keeps a copy (the
    back button after signing out, a shared computer). Static files never get here (WhiteNoise
    answers them first, cached for long); a view that sets its own Cache-Control keeps it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "private, no-store"
        return response

"""Staff pages: search and the card page. They render from the database only (queries.py); the
live parts (card_live, d1_lookup) ask D1 through tracker.live when the browser asks them to."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from tracker import audit, limits, live, pan, queries, sla, stages
from tracker.d1.client import (
    D1BreakerOpen,
    D1Error,
    D1NotFound,
    D1Unavailable,
    Profile,
)
from tracker.d1.schema import CARD_ID
from tracker.models import CardOrder, LookupAudit, Source
from tracker.views import HtmxHttpRequest

VIEW_CARDS = "tracker.view_cardorder"
REFRESH_LIVE = "tracker.refresh_live"
# Parts of the card page an HTMX request asks for by its HX-Target; the timeline otherwise.
_CARD_FRAGMENTS = ("card-header", "timeline", "card-banner")
# How asking D1 can fail (the banners in card_detail.html and search.html say each in words).
_D1_FAILED = ("unavailable", "breaker", "unusable")
# The browser gives up on a live request a while after D1's interactive budget would have.
_BROWSER_GRACE_SECONDS = 10


@dataclass(frozen=True)
class _Asked:
    """What asking D1 about one card came to: the audit outcome and, if it failed, how."""

    outcome: LookupAudit.Outcome
    problem: str = ""  # "", "not_found", "untracked", or one of _D1_FAILED
    detail: str = ""
    order_id: int | None = None


def _ask_d1(issuer_id: str, card_id: str) -> _Asked:
    """live.refresh() on the interactive profile (it gives up within D1_INTERACTIVE_BUDGET);
    D1's failures become an outcome for the page, never an error page."""
    try:
        result = live.refresh(
            issuer_id, card_id, source=Source.ON_DEMAND, profile=Profile.INTERACTIVE
        )
    except D1NotFound as e:
        return _Asked(LookupAudit.Outcome.D1_NOT_FOUND, "not_found", str(e))
    except D1BreakerOpen as e:
        return _Asked(LookupAudit.Outcome.D1_UNAVAILABLE, "breaker", str(e))
    except D1Unavailable as e:
        return _Asked(LookupAudit.Outcome.D1_UNAVAILABLE, "unavailable", str(e))
    except D1Error as e:
        # D1BadResponse, D1Rejected or an unusable D1 key: nothing an agent can fix, so the
        # page treats it as D1 being unavailable and the audit keeps what it was.
        return _Asked(LookupAudit.Outcome.D1_UNAVAILABLE, "unusable", f"{type(e).__name__}: {e}")
    if result.order_id is None:
        return _Asked(LookupAudit.Outcome.UNCHANGED, "untracked", "no card order in the answer")
    changed = LookupAudit.Outcome.CHANGED if result.changed else LookupAudit.Outcome.UNCHANGED
    return _Asked(changed, order_id=result.order_id)


def _card_context(detail: queries.CardDetail) -> dict[str, Any]:
    order = detail.order
    return {
        "order": order,
        "events": detail.events,
        "older_events_hidden": detail.older_events_hidden,
        "timeline_limit": queries.TIMELINE_LIMIT,
        "stage": stages.stage_situation(order.stage),
        "guidance": stages.guidance(order),
        "steps": stages.steps(order.stage),
        "sla": sla.status(order, timezone.now()),
        "carrier_name": stages.carrier_name(order.carrier),
        "tracking_link": stages.tracking_link(order.tracking_url),
    }


def _live_context(
    request: HtmxHttpRequest, order: CardOrder, asked: _Asked | None = None
) -> dict[str, Any]:
    """How the card page asks D1: on load (the full page only) and every poll_seconds while the
    order can still change. No poll in the markup is how polling stops."""
    if not request.user.has_perm(REFRESH_LIVE):
        return {"can_refresh": False}
    polls = not order.terminal and not order.unknown_to_d1
    first = asked is None and not request.htmx
    triggers = [name for name, on in (("load", first), ("poll", polls)) if on]
    budget = settings.D1_INTERACTIVE_BUDGET
    return {
        "can_refresh": True,
        "live_url": reverse("tracker:card_live", args=[order.issuer_id, order.card_id]),
        "live_trigger": ", ".join(triggers),
        "poll_seconds": settings.TRACKER_CARD_POLL_SECONDS if polls else None,
        "live_timeout_ms": int((budget + _BROWSER_GRACE_SECONDS) * 1000),
        "d1_problem": asked.problem if asked else "",
        "d1_budget": budget,
        "d1_breaker_cooldown": settings.D1_BREAKER_COOLDOWN,
    }


def _search_context(request: HtmxHttpRequest, q: str) -> dict[str, Any]:
    # Nothing stores a card number, so there is nothing to find: the number is neither searched,
    # nor offered to D1, nor shown back in clear.
    card_number = pan.contains_pan(q)
    if card_number:
        q = pan.mask_pans(q)
    found = queries.find_cards(q) if q and not card_number else None
    # Where the live "Look up in D1" goes: a miss that D1 might still know.
    lookup_card_id = q if found and not found.hits and CARD_ID.fullmatch(q) else ""
    return {
        "q": q,
        "card_number": card_number,
        "found": found,
        "search_limit": queries.SEARCH_LIMIT,
        "lookup_card_id": lookup_card_id,
        "issuer_ids": settings.D1_ISSUER_IDS,
        "can_lookup": request.user.has_perm(REFRESH_LIVE),
        "lookup_timeout_ms": int((settings.D1_INTERACTIVE_BUDGET + _BROWSER_GRACE_SECONDS) * 1000),
    }


def _served(issuer_id: str) -> None:
    """A card of an issuer this deployment does not serve is not found, whoever asks."""
    if issuer_id not in settings.D1_ISSUER_IDS:
        raise Http404("issuer not served")


def _card_url(issuer_id: str, card_id: str) -> str:
    return reverse("tracker:card_detail", args=[issuer_id, card_id])


# Same URL for the page and its fragment: keep browser caches from mixing them up.
@vary_on_headers("HX-Request")
@require_GET
@permission_required(VIEW_CARDS, raise_exception=True)
def search(request: HtmxHttpRequest) -> HttpResponse:
    context = _search_context(request, request.GET.get("q", "").strip())
    found = context["found"]
    if found and len(found.hits) == 1:
        order = found.hits[0].order
        url = _card_url(order.issuer_id, order.card_id)
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    template = "tracker/search.html"
    if request.htmx:
        template += "#search-results"
    return render(request, template, context)


@vary_on_headers("HX-Request")
@require_GET
def card_detail(request: HtmxHttpRequest, issuer_id: str, card_id: str) -> HttpResponse:
    _served(issuer_id)
    # Checked here rather than by decorator so that refused attempts are audited too.
    if not request.user.has_perm(VIEW_CARDS):
        audit.record(
            request.user, issuer_id, card_id, LookupAudit.Action.VIEW, LookupAudit.Outcome.DENIED
        )
        raise PermissionDenied
    detail = queries.card_detail(issuer_id, card_id)
    outcome = LookupAudit.Outcome.FOUND if detail else LookupAudit.Outcome.NOT_FOUND
    audit.record(request.user, issuer_id, card_id, LookupAudit.Action.VIEW, outcome)
    if detail is None:
        missing = {"missing_issuer_id": issuer_id, "missing_card_id": card_id}
        return render(request, "404.html", missing, status=404)
    template = "tracker/card_detail.html"
    if request.htmx:
        target = request.htmx.target
        template += f"#{target if target in _CARD_FRAGMENTS else 'timeline'}"
    context = {**_card_context(detail), **_live_context(request, detail.order)}
    return render(request, template, context)


# POST only: it calls D1 and writes (the order, the audit), so it needs the CSRF token, which
# htmx sends from <body hx-headers> and the no-JavaScript form as a field.
@require_POST
def card_live(request: HtmxHttpRequest, issuer_id: str, card_id: str) -> HttpResponse:
    _served(issuer_id)
    if not request.user.has_perms([VIEW_CARDS, REFRESH_LIVE]):
        audit.record(
            request.user, issuer_id, card_id, LookupAudit.Action.REFRESH, LookupAudit.Outcome.DENIED
        )
        raise PermissionDenied
    if refused := limits.live_refused(request):
        return refused
    asked = _ask_d1(issuer_id, card_id)
    audit.record(
        request.user, issuer_id, card_id, LookupAudit.Action.REFRESH, asked.outcome, asked.detail
    )
    url = _card_url(issuer_id, card_id)
    if not request.htmx and asked.problem not in _D1_FAILED:
        return redirect(url)  # without JavaScript: the refreshed page, or D1's 404 banner
    detail = queries.card_detail(issuer_id, card_id)
    if detail is None:  # neither Tracker nor D1 knows the card: its page says so
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    context = {**_card_context(detail), **_live_context(request, detail.order, asked)}
    # htmx: the timeline in place of the old one, header and banner out of band.
    template = "tracker/card_detail.html#card-live" if request.htmx else "tracker/card_detail.html"
    return render(request, template, context)


@require_POST
def d1_lookup(request: HtmxHttpRequest) -> HttpResponse:
    issuer_id = request.POST.get("issuer_id", "")
    card_id = request.POST.get("card_id", "").strip()
    _served(issuer_id)
    if not CARD_ID.fullmatch(card_id) or pan.contains_pan(card_id):
        return HttpResponseBadRequest("Not a D1 card ID.")
    if not request.user.has_perms([VIEW_CARDS, REFRESH_LIVE]):
        audit.record(
            request.user, issuer_id, card_id, LookupAudit.Action.LOOKUP, LookupAudit.Outcome.DENIED
        )
        raise PermissionDenied
    if refused := limits.live_refused(request):
        return refused
    asked = _ask_d1(issuer_id, card_id)
    audit.record(
        request.user, issuer_id, card_id, LookupAudit.Action.LOOKUP, asked.outcome, asked.detail
    )
    if asked.order_id is not None:  # D1 knows it, and now Tracker does too
        url = _card_url(issuer_id, card_id)
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    context = {
        **_search_context(request, card_id),
        "lookup_problem": asked.problem,
        "lookup_issuer_id": issuer_id,
    }
    template = "tracker/search.html#d1-lookup" if request.htmx else "tracker/search.html"
    return render(request, template, context)

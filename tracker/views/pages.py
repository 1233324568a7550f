"""Staff pages: search and the card page. They render from the database only (queries.py)."""

import re
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from tracker import audit, queries, sla, stages
from tracker.models import LookupAudit
from tracker.views import HtmxHttpRequest

VIEW_CARDS = "tracker.view_cardorder"
# D1's cardId (REFERENCE §1): a query of this shape may be a card D1 knows and Tracker does not.
_CARD_ID = re.compile(r"[A-Za-z0-9_-]{1,48}")
# Parts of the card page an HTMX request asks for by its HX-Target; the timeline otherwise.
_CARD_FRAGMENTS = ("card-header", "timeline", "card-banner")


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


# Same URL for the page and its fragment: keep browser caches from mixing them up.
@vary_on_headers("HX-Request")
@require_GET
@permission_required(VIEW_CARDS, raise_exception=True)
def search(request: HtmxHttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    found = queries.find_cards(q) if q else None
    if found and len(found.hits) == 1:
        order = found.hits[0].order
        url = reverse("tracker:card_detail", args=[order.issuer_id, order.card_id])
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    # Where the live "Look up in D1" goes: a miss that D1 might still know.
    lookup_card_id = q if found and not found.hits and _CARD_ID.fullmatch(q) else ""
    template = "tracker/search.html"
    if request.htmx:
        template += "#search-results"
    context = {
        "q": q,
        "found": found,
        "search_limit": queries.SEARCH_LIMIT,
        "lookup_card_id": lookup_card_id,
        "issuer_ids": settings.D1_ISSUER_IDS,
    }
    return render(request, template, context)


@vary_on_headers("HX-Request")
@require_GET
def card_detail(request: HtmxHttpRequest, issuer_id: str, card_id: str) -> HttpResponse:
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
    return render(request, template, _card_context(detail))

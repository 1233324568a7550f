"""Endpoints for machines: liveness (/livez) and Prometheus metrics (/metrics)."""

import ipaddress
import logging
import secrets

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from tracker.ops import metrics

logger = logging.getLogger(__name__)


@login_not_required
@require_GET
@never_cache
def livez(request: HttpRequest) -> JsonResponse:
    """The process answers: no database, no cache, nothing that another component can break."""
    return JsonResponse({"status": "alive"})


def _allowed(request: HttpRequest) -> bool:
    token = settings.TRACKER_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return secrets.compare_digest(given.encode(), token.encode())
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.TRACKER_METRICS_NETWORKS)


@login_not_required
@require_GET
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; a bearer token (TRACKER_METRICS_TOKEN) or an allowed network."""
    if not _allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    try:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
    except DatabaseError as e:
        logger.warning("metrics: database unavailable: %s", type(e).__name__)
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=content_type)

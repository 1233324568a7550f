"""Operations health: notification delivery for supervisors, and /healthz for machines."""

import logging
from datetime import datetime
from typing import Any

from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from tracker import applier, queries, serialize
from tracker.d1 import client
from tracker.models import Sweep
from tracker.ops import health as ops_health
from tracker.reconcile import sweep
from tracker.views import HtmxHttpRequest

logger = logging.getLogger(__name__)

# /healthz answers anyone, as often as a load balancer likes: the 24 h counts are computed at
# most this often. The database check itself is live on every call.
_HEALTH_CACHE_KEY = "tracker:delivery-health:v1"
_HEALTH_CACHE_SECONDS = 15


def _lag_json(lag: applier.Lag) -> dict[str, Any]:
    return {
        "pending": lag.pending,
        "lagSeconds": round(lag.seconds, 3),
        "oldestPendingAt": serialize.instant(lag.oldest_received_at),
        "ready": lag.ready,
    }


def _issuer_json(health: queries.IssuerHealth, now: datetime) -> dict:
    last = health.last_received_at
    return {
        "lastReceivedAt": serialize.instant(last),
        "lastAgeSeconds": None if last is None else max(0, int((now - last).total_seconds())),
        "last24h": {
            "notifications": health.notifications,
            **{name: getattr(health, name) for name in queries.OPERATION_COUNTS},
            "rejected": health.rejected,
            "failed": health.failed,
            "authFailures": health.auth_failures,
        },
    }


def _cached_delivery_health() -> queries.DeliveryHealth:
    try:
        return cache.get_or_set(_HEALTH_CACHE_KEY, queries.delivery_health, _HEALTH_CACHE_SECONDS)
    except DatabaseError:
        raise  # the database cache: the database itself is in trouble
    except Exception as e:  # noqa: BLE001 - Redis down must not make /healthz a 500
        logger.warning("healthz: cache unavailable, computing: %s", e.__class__.__name__)
        return queries.delivery_health()


def _breaker() -> dict | str:
    try:
        return client.breaker_state()
    except DatabaseError:
        raise
    except Exception as e:  # noqa: BLE001 - Redis down must not make /healthz a 500
        logger.warning("healthz: breaker state unavailable: %s", e.__class__.__name__)
        return "unknown"


def _sweep_json(last: Sweep | None) -> dict | None:
    if last is None:
        return None
    return {
        "startedAt": serialize.instant(last.started_at),
        "finishedAt": serialize.instant(last.finished_at),
        "issuerId": last.issuer_id or None,
        "checked": last.checked,
        "repaired": last.repaired,
        "notFound": last.not_found,
        "failed": last.failed,
        "stoppedEarly": last.stop_reason or None,
    }


@require_GET
@vary_on_headers("HX-Request")
@permission_required("tracker.work_queue", raise_exception=True)
def delivery(request: HtmxHttpRequest) -> HttpResponse:
    health = queries.delivery_health()
    template = "tracker/delivery.html"
    if request.htmx:
        template += "#delivery-health"
    return render(request, template, {"health": health, "lag": applier.apply_lag()})


@login_not_required
@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """No login, no secrets, no card data: readiness checks (503 naming the failing ones,
    tracker/ops/health.py), apply lag, D1 breaker, deliveries per issuer, and the last sweep."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        health = _cached_delivery_health()
        last_sweep = next(iter(sweep.recent(1)), None)
        lag = applier.apply_lag()
        breaker = _breaker()
        checks = {"database": ops_health.Check(True), **ops_health.checks(breaker, lag)}
    except DatabaseError as e:
        logger.warning("healthz: database unavailable: %s", e.__class__.__name__)
        # The shape every consumer already knows; "database" names the failing check.
        return JsonResponse({"status": "unavailable", "database": "unavailable"}, status=503)
    now = timezone.now()
    failing = [name for name, check in checks.items() if not check.ok]
    return JsonResponse(
        {
            "status": "failing" if failing else "ok",
            "failing": failing,
            "checks": {name: check.as_json() for name, check in checks.items()},
            "database": "ok",
            "applier": _lag_json(lag),
            "d1": {"breaker": breaker},
            "notifications": {h.issuer_id: _issuer_json(h, now) for h in health.issuers},
            "tokenEndpoint": {"authFailures24h": health.token_auth_failures},
            "reconcile": {"lastSweep": _sweep_json(last_sweep)},
        },
        status=503 if failing else 200,
    )

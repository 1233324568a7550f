"""Readiness checks for /healthz: each one names what is wrong, so a 503 says why.

- database: answers a query (checked first; without it nothing else can be read);
- d1_breaker: the shared D1 circuit breaker is not open;
- task_backlog: tasks waiting for a worker ≤ TRACKER_HEALTH_MAX_TASK_BACKLOG;
- apply_lag: the oldest body not applied yet is younger than TRACKER_APPLY_LAG_LIMIT;
- sweep: a reconciliation sweep finished within TRACKER_HEALTH_SWEEP_WITHIN (off by default).

A limit of 0 turns its check off.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from tracker import applier, serialize
from tracker.ops import signals


@dataclass
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


def breaker_check(state: dict | str) -> Check:
    if not isinstance(state, dict):
        return Check(True, {"state": "unknown"})  # the cache is down: not D1's fault
    return Check(state["state"] != "open", {"state": state["state"]})


def task_backlog_check() -> Check:
    limit = settings.TRACKER_HEALTH_MAX_TASK_BACKLOG
    backlog = signals.task_backlog()
    return Check(not limit or backlog <= limit, {"waiting": backlog, "limit": limit or None})


def apply_lag_check(lag: applier.Lag) -> Check:
    detail = {"seconds": round(lag.seconds), "limit": settings.TRACKER_APPLY_LAG_LIMIT}
    return Check(lag.ready, detail)


def sweep_check() -> Check:
    within = settings.TRACKER_HEALTH_SWEEP_WITHIN
    last = signals.last_sweep()
    finished = last.finished_at if last else None
    detail = {"lastFinishedAt": serialize.instant(finished), "within": within or None}
    if not within:
        return Check(True, detail)
    recent = finished is not None and finished >= timezone.now() - timedelta(seconds=within)
    return Check(recent, detail)


def checks(breaker: dict | str, lag: applier.Lag) -> dict[str, Check]:
    """Every check but the database's (which the caller has just made)."""
    return {
        "d1_breaker": breaker_check(breaker),
        "task_backlog": task_backlog_check(),
        "apply_lag": apply_lag_check(lag),
        "sweep": sweep_check(),
    }

"""Prometheus metrics for /metrics.

Two kinds, so that any number of gunicorn workers (and the task workers) give one consistent view:

- **Events counted in a process** (D1 calls by result and their latency, the wait for the D1 rate
  budget). With several processes, set PROMETHEUS_MULTIPROC_DIR (an empty directory shared by the
  processes of one host): prometheus-client then keeps the values in files there and /metrics
  adds them up across processes (docs/operations.md, "Metrics").
- **State read at scrape time** from the database and the shared cache (notifications by
  outcome, breaker state, queue sizes by reason, task backlog, apply lag, sweep repairs, open
  alerts): the same in every worker, computed at most every SNAPSHOT_SECONDS.
"""

import os
import time
from collections.abc import Iterator

from django.core.cache import cache
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

SNAPSHOT_SECONDS = 10
_SNAPSHOT_KEY = "tracker:metrics-snapshot:v1"

# The process's own counters; in multiprocess mode their values live in PROMETHEUS_MULTIPROC_DIR.
PROCESS = CollectorRegistry(auto_describe=True)

D1_CALLS = Counter(
    "tracker_d1_calls",
    "Calls to D1 by call and result (ok, not_found, rejected, bad_response, unavailable,"
    " breaker_open, error).",
    ["call", "result"],
    registry=PROCESS,
)
D1_LATENCY = Histogram(
    "tracker_d1_call_seconds",
    "Duration of a D1 call, retries included, by call.",
    ["call"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=PROCESS,
)
BUDGET_WAIT = Histogram(
    "tracker_d1_budget_wait_seconds",
    "Time background work waited for its turn in the shared D1_MAX_RPS budget.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=PROCESS,
)


def d1_call(call: str, result: str, seconds: float) -> None:
    D1_CALLS.labels(call=call, result=result).inc()
    D1_LATENCY.labels(call=call).observe(seconds)


def budget_wait(seconds: float) -> None:
    BUDGET_WAIT.observe(seconds)


def _snapshot() -> dict:
    from tracker.models import Alert
    from tracker.ops import signals

    last = signals.last_sweep()
    breaker = signals.breaker_state()
    return {
        "notifications": signals.notification_outcomes(),
        "operations": signals.operation_verdicts(),
        "breaker": breaker.state,
        "breaker_failures": breaker.failures,
        "queue": signals.queue_sizes(),
        "late": signals.late_count(),
        "tasks": signals.tasks_by_status(),
        "apply_lag": signals.apply_lag_seconds(),
        "sweep_repairs": signals.sweep_repairs(),
        "last_sweep_repaired": last.repaired if last else 0,
        "last_sweep_finished": last.finished_at.timestamp() if last and last.finished_at else None,
        "last_notification": {
            issuer: at.timestamp() if at else None
            for issuer, at in signals.last_notifications().items()
        },
        "open_alerts": list(Alert.objects.filter(resolved_at=None).values_list("rule", flat=True)),
        "at": time.time(),
    }


def snapshot() -> dict:
    """The state metrics, from the shared cache when a worker computed them moments ago."""
    state: dict = cache.get_or_set(_SNAPSHOT_KEY, _snapshot, SNAPSHOT_SECONDS) or _snapshot()
    return state


def _gauge(name: str, doc: str, labels: list[str], rows: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in rows.items():
        family.add_metric([key] if labels else [], value)
    return family


class StateCollector(Collector):
    """Gauges computed from the database and the shared cache at scrape time."""

    def collect(self) -> Iterator[Metric]:
        s = snapshot()
        yield _gauge(
            "tracker_notifications_24h",
            "Notification bodies received from D1 in the last 24 hours, by outcome.",
            ["outcome"],
            s["notifications"],
        )
        yield _gauge(
            "tracker_notification_operations_24h",
            "Operations in the notifications of the last 24 hours, by verdict.",
            ["verdict"],
            s["operations"],
        )
        yield _gauge(
            "tracker_d1_breaker_state",
            "The shared D1 circuit breaker: 1 for its current state.",
            ["state"],
            {name: int(s["breaker"] == name) for name in ("closed", "open", "half_open")},
        )
        yield _gauge(
            "tracker_d1_breaker_failures", "Consecutive failed D1 calls.", [],
            {"": s["breaker_failures"]},
        )  # fmt: skip
        queue = dict(s["queue"])
        total = queue.pop("total")
        yield _gauge(
            "tracker_queue_orders",
            "Orders needing attention (not acknowledged or snoozed), by reason.",
            ["reason"],
            queue,
        )
        yield _gauge("tracker_queue_orders_total", "Orders needing attention.", [], {"": total})
        yield _gauge(
            "tracker_late_orders", "Open orders past their due moment.", [], {"": s["late"]}
        )
        yield _gauge("tracker_tasks", "Background tasks kept, by status.", ["status"], s["tasks"])
        yield _gauge(
            "tracker_task_backlog",
            "Tasks waiting for a worker.",
            [],
            {"": s["tasks"].get("READY", 0)},
        )
        yield _gauge(
            "tracker_apply_lag_seconds",
            "Age of the oldest notification stored and not processed yet.",
            [],
            {"": s["apply_lag"]},
        )
        yield _gauge(
            "tracker_sweep_repairs",
            "Cards repaired by the reconciliation sweeps kept.",
            [],
            {"": s["sweep_repairs"]},
        )
        yield _gauge(
            "tracker_last_sweep_repairs",
            "Cards the last finished sweep repaired.",
            [],
            {"": s["last_sweep_repaired"]},
        )
        if s["last_sweep_finished"] is not None:
            yield _gauge(
                "tracker_last_sweep_finished_timestamp_seconds",
                "When the last sweep finished (Unix time).",
                [],
                {"": s["last_sweep_finished"]},
            )
        yield _gauge(
            "tracker_last_notification_timestamp_seconds",
            "When the last notification from each served issuer arrived (Unix time).",
            ["issuer"],
            {issuer: at for issuer, at in s["last_notification"].items() if at is not None},
        )
        rules: dict[str, int] = {}
        for rule in s["open_alerts"]:
            rules[rule] = rules.get(rule, 0) + 1
        yield _gauge("tracker_open_alerts", "Alerts open now, by rule.", ["rule"], rules)


def registry(multiprocess_dir: str | None = None) -> CollectorRegistry:
    """What /metrics exposes: the process counters (of every process, in multiprocess mode)
    and the state gauges."""
    scrape = CollectorRegistry(auto_describe=True)
    directory = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(scrape, path=directory)
    else:
        for collector in (D1_CALLS, D1_LATENCY, BUDGET_WAIT):
            scrape.register(collector)
    scrape.register(StateCollector())
    return scrape


def exposition(accept: str = "") -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept)
    return encoder(registry()), content_type

"""/metrics: Prometheus text that prometheus-client's own parser reads, with the series an
operations team graphs, protected by a token or a network rule, and summed across processes."""

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ISSUER, make_order
from tests.sandbox_fixtures import card
from tracker import tasks
from tracker.d1 import breaker
from tracker.d1.client import D1NotFound, Profile
from tracker.d1.client import client as d1_client
from tracker.models import InboxItem, Sweep
from tracker.ops import metrics

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.cache
def test_the_state_series_are_exposed(client, settings):
    now = timezone.now()
    InboxItem.objects.create(issuer_id=ISSUER, body=b"{}", outcome="processed", applied=3)
    InboxItem.objects.create(issuer_id=ISSUER, body=b"x", outcome="rejected")
    InboxItem.objects.create(issuer_id=ISSUER, body=b"{}")
    make_order(card_id="crd-late", late_after=now - timedelta(hours=1), attention_since=now)
    tasks.recompute_attention.enqueue("CARD_PROD_DONE")
    Sweep.objects.create(finished_at=now, checked=10, repaired=4)
    for _ in range(settings.D1_BREAKER_THRESHOLD):
        breaker.record_failure(None)

    samples = scrape(client)
    assert samples[("tracker_notifications_24h", (("outcome", "processed"),))] == 1
    assert samples[("tracker_notifications_24h", (("outcome", "rejected"),))] == 1
    assert samples[("tracker_notifications_24h", (("outcome", "received"),))] == 1
    assert samples[("tracker_notification_operations_24h", (("verdict", "applied"),))] == 3
    assert samples[("tracker_d1_breaker_state", (("state", "open"),))] == 1
    assert samples[("tracker_d1_breaker_state", (("state", "closed"),))] == 0
    assert samples[("tracker_queue_orders", (("reason", "late"),))] == 1
    assert samples[("tracker_queue_orders_total", ())] == 1
    assert samples[("tracker_late_orders", ())] == 1
    assert samples[("tracker_task_backlog", ())] == 1
    assert samples[("tracker_apply_lag_seconds", ())] >= 0
    assert samples[("tracker_sweep_repairs", ())] == 4
    assert samples[("tracker_last_sweep_repairs", ())] == 4
    assert ("tracker_last_notification_timestamp_seconds", (("issuer", ISSUER),)) in samples


def test_d1_calls_are_counted_by_result_with_their_latency(client, d1):
    before = scrape(client)
    call = ("call", "productionStatus")
    ok = ("tracker_d1_calls_total", (call, ("result", "ok")))
    not_found = ("tracker_d1_calls_total", (call, ("result", "not_found")))
    d1.seed(card("crd-metrics-1", stage="CARD_PROD_READY"))
    d1_client().get_production_status(ISSUER, "crd-metrics-1")
    with pytest.raises(D1NotFound):
        d1_client().get_production_status(ISSUER, "crd-metrics-missing")
    cache.clear()
    after = scrape(client)
    assert after[ok] - before.get(ok, 0) == 1
    assert after[not_found] - before.get(not_found, 0) == 1
    count = ("tracker_d1_call_seconds_count", (call,))
    assert after[count] - before.get(count, 0) == 2
    assert ("tracker_d1_call_seconds_bucket", (call, ("le", "+Inf"))) in after


@pytest.mark.cache
def test_background_calls_record_their_wait_for_the_budget(client, d1):
    before = scrape(client).get(("tracker_d1_budget_wait_seconds_count", ()), 0)
    d1.seed(card("crd-metrics-2", stage="CARD_PROD_READY"))
    d1_client(Profile.BACKGROUND).get_production_status(ISSUER, "crd-metrics-2")
    cache.clear()
    after = scrape(client)[("tracker_d1_budget_wait_seconds_count", ())]
    assert after - before >= 1


def test_metrics_need_the_token_when_one_is_set(client, settings):
    settings.TRACKER_METRICS_TOKEN = "scrape-token-0123456789"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    scrape(client, Authorization="Bearer scrape-token-0123456789")


def test_without_a_token_only_the_allowed_networks_may_scrape(client, settings):
    settings.TRACKER_METRICS_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_counters_from_several_processes_are_added_up(tmp_path):
    """What gunicorn's workers record in PROMETHEUS_MULTIPROC_DIR is one sum at the scrape."""
    worker = textwrap.dedent(
        """
        from prometheus_client import Counter, Histogram, CollectorRegistry
        calls = Counter("tracker_d1_calls", "", ["call", "result"], registry=CollectorRegistry())
        latency = Histogram("tracker_d1_call_seconds", "", ["call"], registry=CollectorRegistry())
        for _ in range(3):
            calls.labels(call="productionStatus", result="ok").inc()
            latency.labels(call="productionStatus").observe(0.2)
        """
    )
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", worker],
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            check=True,
        )
    text = __import__("prometheus_client").generate_latest(metrics.registry(str(tmp_path)))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    call = ("call", "productionStatus")
    assert samples[("tracker_d1_calls_total", (call, ("result", "ok")))] == 6
    assert samples[("tracker_d1_call_seconds_count", (call,))] == 6


def test_metrics_answer_503_while_the_database_fails(client):
    from django.db import OperationalError, connection

    def failing(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(failing):
        response = client.get("/metrics")
    assert response.status_code == 503

"""/healthz fails (503, naming the check) for each thing that makes this instance unfit, and
/livez only says the process answers."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection
from django.utils import timezone

from tests.conftest import ISSUER
from tracker import tasks
from tracker.d1 import breaker
from tracker.models import InboxItem, Sweep

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def healthy(settings):
    cache.clear()
    settings.TRACKER_HEALTH_MAX_TASK_BACKLOG = 2
    settings.TRACKER_APPLY_LAG_LIMIT = 300
    settings.TRACKER_HEALTH_SWEEP_WITHIN = 3600
    Sweep.objects.create(finished_at=timezone.now())
    yield
    cache.clear()


def _failing(client) -> list[str]:
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == (503 if body["failing"] else 200)
    assert body["status"] == ("failing" if body["failing"] else "ok")
    return body["failing"]


def test_a_healthy_instance_answers_200_with_every_check(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert set(checks) == {"database", "d1_breaker", "task_backlog", "apply_lag", "sweep"}
    assert all(check["ok"] for check in checks.values())


@pytest.mark.cache
def test_an_open_breaker_fails_readiness(client, settings):
    for _ in range(settings.D1_BREAKER_THRESHOLD):
        breaker.record_failure(None)
    assert _failing(client) == ["d1_breaker"]
    breaker.record_success("probe")
    assert _failing(client) == []


def test_a_task_backlog_past_its_limit_fails_readiness(client):
    for n in range(3):
        tasks.recompute_attention.enqueue(f"threshold-{n}")
    assert _failing(client) == ["task_backlog"]
    assert client.get("/healthz").json()["checks"]["task_backlog"] == {
        "ok": False,
        "waiting": 3,
        "limit": 2,
    }


def test_an_apply_lag_past_its_limit_fails_readiness(client):
    item = InboxItem.objects.create(issuer_id=ISSUER, body=b"{}")
    InboxItem.objects.filter(pk=item.pk).update(received_at=timezone.now() - timedelta(minutes=6))
    assert _failing(client) == ["apply_lag"]
    InboxItem.objects.update(outcome=InboxItem.Outcome.PROCESSED)
    assert _failing(client) == []


def test_no_sweep_within_its_period_fails_readiness(client, settings):
    Sweep.objects.update(finished_at=timezone.now() - timedelta(hours=2))
    assert _failing(client) == ["sweep"]
    settings.TRACKER_HEALTH_SWEEP_WITHIN = 0  # the check turned off
    assert _failing(client) == []


def test_a_database_that_fails_fails_readiness(client):
    def failing(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(failing):
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "unavailable", "database": "unavailable"},
    )


def test_several_failing_checks_are_all_named(client, settings):
    for _ in range(settings.D1_BREAKER_THRESHOLD):
        breaker.record_failure(None)
    Sweep.objects.all().delete()
    assert _failing(client) == ["d1_breaker", "sweep"]


def test_livez_answers_while_the_database_is_down(client):
    def failing(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(failing):
        assert client.get("/healthz").status_code == 503
        response = client.get("/livez")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})

"""Bulk re-check from the queue: tasks through a real `db_worker` against the sandbox."""

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from bench.reconcile import busiest_window as busiest_second
from tests.conftest import ISSUER, op, staff
from tests.sandbox_fixtures import card, child_env
from tracker import ingest, roles
from tracker.d1 import budget
from tracker.models import CardOrder, RecheckBatch, Source

ROOT = Path(__file__).resolve().parent.parent


def worker_env(database_url: str, sandbox, d1_key, **settings: str) -> dict[str, str]:
    return child_env(database_url, sandbox, d1_key, D1_BACKGROUND_RETRIES="0", **settings)


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "db_worker", "--batch", "--no-startup-delay", "--no-reload"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True)
def test_a_bulk_recheck_runs_through_a_real_worker_and_reports_its_results(
    client, d1, d1_key, sandbox, database_url
):
    from django.apps import apps

    roles.sync_groups(apps)  # a transactional test's flush empties the groups
    supervisor = staff(roles.SUPERVISORS, "sup")
    client.force_login(supervisor)
    old = timezone.now() - timezone.timedelta(days=5)
    for card_id in ("crd-behind", "crd-same", "crd-unknown"):
        ingest.apply(
            ISSUER, op("CARD_PROD_READY", cardId=card_id), Source.NOTIFICATION, received_at=old
        )
    d1.seed(card("crd-behind", stage="CARD_SHIPPED"), card("crd-same", stage="CARD_PROD_READY"))
    ids = list(CardOrder.objects.order_by("card_id").values_list("pk", flat=True))

    response = client.post(
        reverse("tracker:queue_recheck"), {"order": ids}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    batch = RecheckBatch.objects.get()
    assert (batch.total, batch.done, batch.created_by) == (3, 0, supervisor)
    assert 'hx-trigger="every 2s"' in response.content.decode()

    worker = run_worker(worker_env(database_url, sandbox, d1_key))
    assert worker.returncode == 0, worker.stderr[-2000:]

    batch.refresh_from_db()
    assert (batch.done, batch.changed, batch.failed) == (3, 2, 1)
    behind = CardOrder.objects.get(card_id="crd-behind")
    assert behind.stage == "CARD_SHIPPED"
    assert behind.events.filter(source=Source.ON_DEMAND).exists()
    assert CardOrder.objects.get(card_id="crd-unknown").unknown_to_d1
    progress = client.get(
        reverse("tracker:recheck_progress", args=[batch.pk]), headers={"HX-Request": "true"}
    ).content.decode()
    assert "3 checked, 2 changed, 1 failed" in progress and "hx-trigger" not in progress


@pytest.mark.django_db
def test_re_checking_everything_matching_the_filter_is_capped(client, settings):
    settings.TRACKER_RECHECK_MAX = 2
    user = staff(roles.SUPERVISORS, "sup2")
    client.force_login(user)
    old = timezone.now() - timezone.timedelta(days=5)
    for n in range(4):
        ingest.apply(
            ISSUER, op("CARD_PROD_READY", cardId=f"crd-{n}"), Source.NOTIFICATION, received_at=old
        )
    response = client.post(
        reverse("tracker:queue_recheck"), {"everything": "on", "reason": "silent"}
    )
    batch = RecheckBatch.objects.get()
    assert response.status_code == 302 and batch.total == 2


@pytest.mark.django_db
def test_agents_cannot_start_a_recheck(client):
    user = staff(roles.AGENTS, "amy")
    client.force_login(user)
    assert client.post(reverse("tracker:queue_recheck"), {"everything": "on"}).status_code == 403
    assert not RecheckBatch.objects.exists()


def grants(rate: float, callers: int, each: int, name: str) -> list[float]:
    """The moments reserved for each of `callers` threads' `each` turns (when each may send)."""
    moments, errors, lock = [], [], threading.Lock()

    def take() -> None:
        try:
            for _ in range(each):
                asked = time.time()
                waited = budget.acquire(name, rate)
                with lock:
                    moments.append(asked + waited)
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return sorted(moments)


@pytest.mark.cache
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["database", "redis"])
def test_the_rate_budget_holds_in_every_one_second_window(settings, store):
    if store == "database" and connection.vendor != "postgresql":
        pytest.skip(
            "threads share SQLite's in-memory test database badly; the demo's workers are processes"
        )
    if store == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/15",
            }
        }
        from django.core.cache import cache

        try:
            cache.get("tracker:budget:probe")
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"no Redis on 127.0.0.1:6379: {e}")
    started = time.time()
    # A budget of its own: other test runs on this machine may share the Redis database.
    moments = grants(rate=20, callers=4, each=10, name=f"test-{uuid.uuid4().hex[:20]}")
    assert len(moments) == 40
    assert busiest_second(moments) <= 20
    # Spaced, not bunched: 40 turns at 20/s take about two seconds.
    assert moments[-1] - started >= 1.9

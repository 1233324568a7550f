"""Delivery health: the supervisors' panel on /delivery/ and /healthz."""

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection
from django.utils import timezone

from tests.conftest import ISSUER, NOTIFY_URL, TOKEN_URL, basic, example, staff, stored_item
from tracker import inbox, queries, roles
from tracker.d1 import breaker
from tracker.models import AuthFailureCount, InboxItem
from tracker.queries import IssuerHealth

pytestmark = pytest.mark.django_db

OTHER_ISSUER = "ISS0000002"


def deliver(body: dict | bytes, issuer_id: str = ISSUER) -> InboxItem:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    item = stored_item(issuer_id, raw)
    inbox.process(item.pk)
    item.refresh_from_db()
    return item


@pytest.fixture
def deliveries(client, settings) -> None:
    """A day of deliveries to ISSUER with every outcome, and one older than the window."""
    settings.D1_ISSUER_IDS = [ISSUER, OTHER_ISSUER]
    deliver(example("10"))  # 4 applied
    deliver(example("10"))  # 4 duplicates
    deliver(example("06"))  # 1 applied
    deliver(example("04"))  # 1 stale
    deliver(example("11"))  # 1 unrecognized
    partial = example("02")
    partial["operations"].append({"cardId": "no operationId"})
    deliver(partial)  # 1 stale (the card is past DATA_PREPARED), 1 quarantined
    deliver(b"{not json")  # rejected
    failed = inbox.store(ISSUER, b"{}", {})
    inbox.mark_failed(failed, OperationalError("the database went away"))
    old = deliver(example("07"))
    InboxItem.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(hours=25))
    client.post(NOTIFY_URL, b"{}", content_type="application/json")  # no token: refused
    client.post(NOTIFY_URL, b"{}", content_type="application/json")
    client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic(secret="nope"))
    AuthFailureCount.objects.create(
        issuer_id=ISSUER, hour=timezone.now() - timedelta(days=2), count=50
    )


def test_delivery_health_counts_the_last_24_hours_per_issuer(deliveries):
    health = queries.delivery_health()
    served, other = health.issuers
    latest = InboxItem.objects.filter(issuer_id=ISSUER).latest("received_at").received_at
    assert served == IssuerHealth(
        issuer_id=ISSUER,
        last_received_at=latest,
        notifications=8,
        applied=5,
        duplicate=4,
        stale=2,
        unrecognized=1,
        conflict=0,
        quarantined=1,
        rejected=1,
        failed=1,
        auth_failures=2,
    )
    assert other == IssuerHealth(issuer_id=OTHER_ISSUER, last_received_at=None)
    assert health.token_auth_failures == 1


def test_the_last_notification_counts_even_outside_the_window(settings):
    old = deliver(example("07"))
    long_ago = timezone.now() - timedelta(days=3)
    InboxItem.objects.filter(pk=old.pk).update(received_at=long_ago)
    [served] = queries.delivery_health().issuers
    assert (served.last_received_at, served.notifications, served.applied) == (long_ago, 0, 0)


def test_supervisors_see_the_delivery_panel(client, deliveries):
    client.force_login(staff(roles.SUPERVISORS))
    page = client.get("/delivery/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<section id="delivery-health"' in html
    assert f'<th scope="row">{ISSUER}</th>' in html
    assert '<td class="attention">1</td>' in html  # rejected, failed, quarantined
    assert "Token endpoint: 1 authentication failure." in html


def test_the_panel_alone_answers_htmx(client, deliveries):
    client.force_login(staff(roles.SUPERVISORS))
    fragment = client.get("/delivery/", headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert html.lstrip().startswith('<section id="delivery-health"')
    assert "<html" not in html
    assert "HX-Request" in fragment["Vary"]


def test_support_agents_do_not_see_the_delivery_panel(client):
    client.force_login(staff(roles.AGENTS))
    assert client.get("/delivery/").status_code == 403


def test_healthz_answers_anyone_with_delivery_health_and_no_secrets(client, deliveries, settings):
    cache.clear()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    health = response.json()
    assert (health["status"], health["database"]) == ("ok", "ok")
    served = health["notifications"][ISSUER]
    assert served["lastReceivedAt"].endswith("Z") and 0 <= served["lastAgeSeconds"] < 60
    assert served["last24h"] == {
        "notifications": 8,
        "applied": 5,
        "duplicate": 4,
        "stale": 2,
        "unrecognized": 1,
        "conflict": 0,
        "quarantined": 1,
        "rejected": 1,
        "failed": 1,
        "authFailures": 2,
    }
    assert health["notifications"][OTHER_ISSUER]["lastReceivedAt"] is None
    assert health["tokenEndpoint"] == {"authFailures24h": 1}
    text = response.content.decode()
    assert "crd-" not in text and settings.D1_NOTIFY_CLIENT_SECRET not in text


def test_healthz_answers_503_when_the_database_fails(client):
    def failing(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(failing):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable"}


def test_healthz_still_answers_when_the_shared_cache_is_down(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1",  # nothing listens there
        }
    }
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
    assert response.json()["d1"] == {"breaker": "unknown"}


@pytest.mark.cache
def test_healthz_shows_the_d1_breaker(client, settings):
    cache.clear()
    assert client.get("/healthz").json()["d1"]["breaker"]["state"] == "closed"
    for _ in range(settings.D1_BREAKER_THRESHOLD):
        breaker.record_failure(None)
    response = client.get("/healthz")
    assert response.status_code == 503
    opened = response.json()["d1"]["breaker"]
    assert opened["state"] == "open"
    assert opened["failures"] == settings.D1_BREAKER_THRESHOLD
    cache.clear()

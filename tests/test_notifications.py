"""The D1 notification endpoint and our token endpoint, over HTTP (CONTRACT §3)."""

import hashlib
import hmac
import json
import runpy
import threading
import time
from pathlib import Path
from unittest import mock

import httpx
import pytest
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection, transaction
from django.db.models import Sum

import tracker
from tests.conftest import (
    EXAMPLES,
    ISSUER,
    NOTIFY_URL,
    TOKEN_URL,
    basic,
    database_unreachable,
    drain,
    example,
    make_operation,
    storm_senders,
)
from tests.test_ingest import LIFECYCLE, _in_order_state, _lifecycle, _state
from tracker import applier, attention
from tracker.models import AuthFailureCount, CardOrder, InboxItem, Source, TimelineEvent

pytestmark = pytest.mark.django_db

CARD = "crd-ev-2025-000731"
SETTINGS_FILE = str(Path(tracker.__file__).parent / "settings.py")


def post(client, body: bytes | dict, headers: dict | None = None, **extra):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    extra.setdefault("content_type", "application/json")
    return client.post(extra.pop("url", NOTIFY_URL), body, headers=headers or {}, **extra)


def example_bytes(name: str) -> bytes:
    [path] = EXAMPLES.glob(f"{name}*.json")
    return path.read_bytes()


def auth_failures(issuer_id: str = ISSUER) -> int:
    counted = AuthFailureCount.objects.filter(issuer_id=issuer_id).aggregate(n=Sum("count"))
    return counted["n"] or 0


def assert_nothing_kept() -> None:
    assert not InboxItem.objects.exists()
    assert not CardOrder.objects.exists()


# --- The shared examples -------------------------------------------------------------------


def test_every_shared_example_posted_over_http_is_stored_and_applied(client, bearer):
    answers = {path.name[:2]: post(client, path.read_bytes(), bearer).status_code for path in
               sorted(EXAMPLES.glob("*.json"))}  # fmt: skip
    # 13 is D1's error body, not a notification: no operations list, so it can never succeed.
    assert answers == {name: 400 if name == "13" else 204 for name in answers}
    drain()  # answered 204, then applied by the applier
    assert InboxItem.objects.count() == len(answers)
    rejected = InboxItem.objects.get(outcome=InboxItem.Outcome.REJECTED)
    assert json.loads(bytes(rejected.body))["errorCode"] == "AUTHORIZER_UNAUTHORIZED"
    shipped = CardOrder.objects.get(card_id=CARD)
    assert (shipped.stage, shipped.shipment_status, shipped.unrecognized_status) == (
        "CARD_SHIPPED",
        "Delivered",
        "",
    )
    assert CardOrder.objects.get(card_id="crd-ext-2025-009914").stage == "CARD_RETURNED"
    assert CardOrder.objects.count() == 8
    events = TimelineEvent.objects.count()

    # D1 delivers at least once: the same bodies again are all answered 204 and change nothing.
    for path in sorted(EXAMPLES.glob("*.json")):
        if not path.name.startswith("13"):
            assert post(client, path.read_bytes(), bearer).status_code == 204
    drain()
    assert TimelineEvent.objects.count() == events
    assert InboxItem.objects.aggregate(n=Sum("duplicate"))["n"] == events


def test_the_inbox_keeps_safe_headers_only(client, bearer):
    post(client, example_bytes("07"), {**bearer, "X-Correlation-Id": "corr-1", "Cookie": "a=b"})
    headers = InboxItem.objects.get().headers
    assert headers["x-correlation-id"] == "corr-1"
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers and "cookie" not in headers
    assert bearer["Authorization"].split()[1] not in json.dumps(headers)


# --- Answers other than 204 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"operations": {"cardId": "x"}}', "operations: must be a list"),
        (b"[]", "'operations' list"),
    ],
)
def test_a_body_that_can_never_succeed_is_stored_and_answered_400(client, bearer, body, problem):
    response = post(client, body, bearer)
    assert response.status_code == 400
    assert problem in response.json()["error"]
    item = InboxItem.objects.get()
    assert (item.outcome, bytes(item.body)) == (InboxItem.Outcome.REJECTED, body)
    assert problem in item.error


def test_a_body_over_the_limit_is_answered_413_and_not_kept(client, bearer, settings):
    settings.D1_NOTIFY_MAX_BODY_BYTES = 2048
    response = post(client, example_bytes("10"), bearer)  # 2519 bytes
    assert response.status_code == 413
    assert "2048 bytes" in response.json()["error"]
    assert_nothing_kept()
    exactly = example_bytes("07").ljust(2048)  # trailing whitespace is still JSON
    assert post(client, exactly, bearer).status_code == 204


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_not_sent_as_json_is_answered_415_and_not_kept(client, bearer, content_type):
    response = post(client, example_bytes("07"), bearer, content_type=content_type)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert_nothing_kept()


def test_json_with_a_charset_parameter_is_json(client, bearer):
    response = post(
        client, example_bytes("07"), bearer, content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 204


def test_an_issuer_not_served_is_answered_404_and_nothing_is_kept(client, bearer):
    url = NOTIFY_URL.replace(ISSUER, "ISS0NOTOUR")
    response = post(client, example_bytes("07"), bearer, url=url)
    assert response.status_code == 404
    assert "ISS0NOTOUR" in response.json()["error"]
    assert_nothing_kept()


def test_a_chunked_body_the_server_cannot_read_is_answered_411_so_d1_retries(client, bearer):
    headers = {**bearer, "Transfer-Encoding": "chunked"}
    response = post(client, example_bytes("07"), headers, CONTENT_LENGTH="")
    assert response.status_code == 411
    assert_nothing_kept()


def test_only_post_is_allowed(client, bearer):
    assert client.get(NOTIFY_URL, headers=bearer).status_code == 405


def test_a_bulk_post_with_one_bad_item_applies_the_others_and_quarantines_it(client, bearer):
    body = example("10")
    body["operations"][2]["startTime"] = "yesterday"
    assert post(client, body, bearer).status_code == 204
    drain()
    item = InboxItem.objects.get()
    assert item.outcome == InboxItem.Outcome.PARTIAL
    assert (item.applied, item.quarantined) == (3, 1)
    assert item.results[2]["field"] == "operations[2].startTime"
    assert CardOrder.objects.count() == 3
    assert not CardOrder.objects.filter(card_id="crd-br-2025-110203").exists()


def test_a_nul_character_in_one_item_quarantines_that_item_only(client, bearer):
    # PostgreSQL would refuse the whole transaction: answered 503, D1 would deliver it forever.
    body = example("10")
    body["operations"][1]["details"]["reason"] = "held\x00"
    assert post(client, body, bearer).status_code == 204
    drain()
    item = InboxItem.objects.get()
    assert (item.outcome, item.applied, item.quarantined) == (InboxItem.Outcome.PARTIAL, 3, 1)
    assert item.results[1]["field"] == "operations[1].details.reason"
    assert "NUL" in item.results[1]["error"]


def test_nan_in_one_item_quarantines_that_item_only(client, bearer):
    body = json.dumps(example("10")).replace('"operations": [{', '"operations": [{"x": NaN, ', 1)
    assert post(client, body.encode(), bearer).status_code == 204
    drain()
    item = InboxItem.objects.get()
    assert (item.applied, item.quarantined) == (3, 1)
    assert item.results[0] == {
        "index": 0,
        "field": "operations[0].x",
        "error": "operations[0].x: is NaN, which is not a JSON number",
    }


def test_a_body_nested_too_deeply_to_read_is_kept_and_answered_400(client, bearer):
    body = b'{"operations": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    response = post(client, body, bearer)
    assert response.status_code == 400
    assert response.json() == {"error": "body is nested too deeply to be read"}
    assert InboxItem.objects.get().outcome == InboxItem.Outcome.REJECTED


# --- Transient failures: 503, the body kept, D1 delivers again -----------------------------


def _failing(sql_fragment: str):
    """A database execute wrapper that fails the matching statement as a lock timeout would."""

    def wrapper(execute, sql, params, many, context):
        if sql_fragment in sql:
            raise OperationalError("canceling statement due to lock timeout")
        return execute(sql, params, many, context)

    return wrapper


def test_a_transient_failure_while_applying_leaves_the_body_pending_for_the_next_batch(
    client, bearer
):
    body = example_bytes("07")
    assert post(client, body, bearer).status_code == 204  # stored: the answer waits for no apply
    with (
        connection.execute_wrapper(_failing('INSERT INTO "tracker_timelineevent"')),
        pytest.raises(OperationalError),
    ):
        drain()
    item = InboxItem.objects.get()
    assert (item.outcome, bytes(item.body)) == (InboxItem.Outcome.RECEIVED, body)
    assert not CardOrder.objects.exists()  # the whole batch was rolled back

    assert drain() == 1  # the applier's next batch
    assert CardOrder.objects.get().stage == "CARD_SHIPPED"
    assert InboxItem.objects.get().outcome == InboxItem.Outcome.PROCESSED


@pytest.mark.django_db(transaction=True)  # as in production: the INSERT is its own transaction
def test_a_transient_failure_while_storing_answers_503(client, bearer):
    with connection.execute_wrapper(_failing('INSERT INTO "tracker_inboxitem"')):
        response = post(client, example_bytes("07"), bearer)
    assert response.status_code == 503
    assert_nothing_kept()


@pytest.mark.django_db(transaction=True)
def test_a_locked_card_never_holds_the_answer_and_is_applied_once_released(
    client, bearer, on_postgres
):
    assert post(client, example_bytes("02"), bearer).status_code == 204
    drain()
    locked, release = threading.Event(), threading.Event()

    def hold_the_card() -> None:
        try:
            with transaction.atomic():
                CardOrder.objects.select_for_update().get(card_id=CARD)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_card)
    holder.start()
    assert locked.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        # The request path locks no card: answered at once while the card is held.
        assert post(client, example_bytes("04"), bearer).status_code == 204
        with pytest.raises(OperationalError, match="lock timeout"):
            drain()
    finally:
        release.set()
        holder.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert InboxItem.objects.filter(outcome=InboxItem.Outcome.RECEIVED).count() == 1

    assert drain() == 1
    assert CardOrder.objects.get(card_id=CARD).stage == "CARD_PROD_READY"


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_answers_503_never_500(client, bearer, on_postgres):
    with database_unreachable():
        stored = post(client, example_bytes("07"), bearer)
        refused = post(client, example_bytes("07"))  # the failure cannot be counted: still 401
        health = client.get("/healthz")
    assert (stored.status_code, refused.status_code, health.status_code) == (503, 401, 503)
    assert health.json() == {"status": "unavailable", "database": "unavailable"}
    assert not InboxItem.objects.exists()


# --- Authentication: bearer (default) ------------------------------------------------------


def test_the_token_endpoint_issues_a_short_lived_bearer_token(client):
    response = client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic())
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = response.json()
    assert set(token) == {"access_token", "token_type", "expires_in"}
    assert token["token_type"] == "Bearer" and 0 < token["expires_in"] <= 900


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(secret="not-the-secret"),
        basic(client_id="someone-else"),
        {"Authorization": "Basic not base64!"},
        {"Authorization": "Bearer abc"},
    ],
    ids=["none", "wrong secret", "wrong client", "malformed", "not basic"],
)
def test_the_token_endpoint_refuses_wrong_client_credentials(client, headers):
    response = client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}
    assert response["WWW-Authenticate"].startswith("Basic")
    assert auth_failures(AuthFailureCount.TOKEN_ENDPOINT) == 1


@pytest.mark.parametrize(
    ("form", "error"),
    [({"grant_type": "password"}, "unsupported_grant_type"), ({}, "invalid_request")],
)
def test_the_token_endpoint_answers_other_grants_as_rfc_6749_says(client, form, error):
    response = client.post(TOKEN_URL, form, headers=basic())
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_the_token_endpoint_refuses_everyone_when_no_secret_is_set(client, settings):
    settings.D1_NOTIFY_CLIENT_SECRET = ""
    response = client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic())
    assert response.status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not-a-token",
        "Basic ZDEtZGVtbzpkMS1kZW1vLXNlY3JldA==",
        "Bearer " + signing.dumps({"sub": "d1-demo"}),  # signed by us, but not a token
    ],
    ids=["none", "empty", "garbage", "basic", "other signature"],
)
def test_a_notification_without_a_valid_token_is_refused_and_nothing_is_kept(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = post(client, example_bytes("07"), headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_kept()
    assert auth_failures() == 1


def test_an_expired_token_is_refused(client, settings):
    issued = time.time() - settings.D1_NOTIFY_TOKEN_TTL - 1
    with mock.patch("time.time", return_value=issued):
        response = client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic())
    token = response.json()["access_token"]
    assert (
        post(client, example_bytes("07"), {"Authorization": f"Bearer {token}"}).status_code == 401
    )
    assert_nothing_kept()


def test_changing_the_client_secret_revokes_the_tokens_issued(client, bearer, settings):
    settings.D1_NOTIFY_CLIENT_SECRET = "the-next-secret"
    assert post(client, example_bytes("07"), bearer).status_code == 401
    assert_nothing_kept()


# --- Authentication: hmac ------------------------------------------------------------------


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def hmac_mode(settings) -> None:
    settings.D1_NOTIFY_AUTH = "hmac"
    settings.D1_NOTIFY_HMAC_HEADER = "X-Body-Signature"
    settings.D1_NOTIFY_HMAC_SECRETS = ["current-secret", "next-secret"]


def test_hmac_mode_accepts_a_body_signed_with_either_secret(client, hmac_mode):
    body = example_bytes("07")
    for signature in (
        sign(body, "current-secret"),
        "sha256=" + sign(body, "next-secret"),
        sign(body, "current-secret").upper(),
    ):
        assert post(client, body, {"X-Body-Signature": signature}).status_code == 204
    assert InboxItem.objects.count() == 3
    assert "x-body-signature" not in InboxItem.objects.first().headers


def test_hmac_mode_refuses_a_missing_or_wrong_signature_and_keeps_nothing(client, hmac_mode):
    body = example_bytes("07")
    for headers in (
        {},
        {"X-Body-Signature": sign(body, "retired-secret")},
        {"X-Body-Signature": sign(example_bytes("08"), "current-secret")},
        {"X-D1-Signature": sign(body, "current-secret")},  # not the configured header
    ):
        assert post(client, body, headers).status_code == 401
    assert_nothing_kept()
    assert auth_failures() == 4


# --- Authentication: proxy-mtls and none ---------------------------------------------------

D1_SUBJECT = "CN=notifications.d1.thalescloud.io,O=Thales,C=FR"
VERIFIED = {"X-SSL-Client-Verify": "SUCCESS", "X-SSL-Client-S-DN": D1_SUBJECT}


@pytest.fixture
def proxy_mode(settings) -> None:
    settings.D1_NOTIFY_AUTH = "proxy-mtls"
    settings.TRUSTED_PROXY_IPS = ["127.0.0.1/32", "10.0.0.0/8"]


def test_proxy_mtls_mode_believes_the_verified_header_from_a_trusted_proxy(client, proxy_mode):
    assert post(client, example_bytes("07"), VERIFIED).status_code == 204
    assert post(client, example_bytes("08"), VERIFIED, REMOTE_ADDR="10.1.2.3").status_code == 204
    headers = InboxItem.objects.first().headers
    assert headers["x-ssl-client-verify"] == "SUCCESS"
    assert headers["remote-addr"] in {"127.0.0.1", "10.1.2.3"}


def test_proxy_mtls_mode_refuses_anything_else_and_keeps_nothing(client, proxy_mode):
    body = example_bytes("07")
    assert post(client, body, VERIFIED, REMOTE_ADDR="203.0.113.9").status_code == 401
    assert (
        post(client, body, {"X-SSL-Client-Verify": "FAILED:certificate expired"}).status_code == 401
    )
    assert post(client, body, {"X-SSL-Client-Verify": "NONE"}).status_code == 401
    assert post(client, body).status_code == 401
    assert_nothing_kept()
    assert auth_failures() == 4


def test_proxy_mtls_mode_can_pin_the_client_certificate_subject(client, proxy_mode, settings):
    settings.D1_NOTIFY_MTLS_SUBJECTS = [D1_SUBJECT]
    assert post(client, example_bytes("07"), VERIFIED).status_code == 204
    impostor = {**VERIFIED, "X-SSL-Client-S-DN": "CN=someone.example.com,O=Else,C=FR"}
    assert post(client, example_bytes("08"), impostor).status_code == 401
    assert InboxItem.objects.count() == 1


def test_none_mode_takes_notifications_without_credentials(client, settings):
    settings.D1_NOTIFY_AUTH = "none"
    assert post(client, example_bytes("07")).status_code == 204


# --- Settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"D1_NOTIFY_AUTH": "hmac"}, "D1_NOTIFY_HMAC_SECRETS"),
        ({"D1_NOTIFY_HMAC_SECRETS": "a,b,c"}, "D1_NOTIFY_HMAC_SECRETS"),
        ({"D1_NOTIFY_AUTH": "proxy-mtls"}, "TRUSTED_PROXY_IPS"),
        ({"TRUSTED_PROXY_IPS": "10.0.0.300"}, "TRUSTED_PROXY_IPS"),
        ({"D1_NOTIFY_TOKEN_TTL": "3600"}, "D1_NOTIFY_TOKEN_TTL"),
        ({"D1_NOTIFY_MAX_BODY_BYTES": "5M"}, "D1_NOTIFY_MAX_BODY_BYTES"),
        ({"D1_NOTIFY_HMAC_HEADER": "X-Sig: x"}, "D1_NOTIFY_HMAC_HEADER"),
        ({"D1_NOTIFY_AUTH": "none", "DJANGO_DEBUG": "0"}, "D1_NOTIFY_AUTH"),
    ],
)
def test_a_bad_notification_setting_stops_start_up_naming_it(monkeypatch, env, named):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "x" * 50)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=named):
        runpy.run_path(SETTINGS_FILE)


def test_notification_settings_are_parsed_from_the_environment(monkeypatch):
    monkeypatch.setenv("D1_NOTIFY_AUTH", "proxy-mtls")
    monkeypatch.setenv("TRUSTED_PROXY_IPS", "10.0.0.7, 192.168.0.0/16")
    monkeypatch.setenv("D1_NOTIFY_MTLS_SUBJECTS", "CN=a,O=B,C=FR | CN=c,O=D,C=FR")
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
    parsed = runpy.run_path(SETTINGS_FILE)
    assert parsed["TRUSTED_PROXY_IPS"] == ["10.0.0.7/32", "192.168.0.0/16"]
    assert parsed["D1_NOTIFY_MTLS_SUBJECTS"] == ["CN=a,O=B,C=FR", "CN=c,O=D,C=FR"]
    assert parsed["D1_NOTIFY_MAX_BODY_BYTES"] == 5 * 1024 * 1024
    assert parsed["DATABASES"]["default"]["OPTIONS"]["options"] == "-c lock_timeout=5000"


# --- The write path's budget ---------------------------------------------------------------


def bulk(count: int, stage: str = "DATA_PREPARED", prefix: str = "q") -> dict:
    return {
        "operations": [
            make_operation(stage, cardId=f"crd-{prefix}-{n}", operationId=f"op-{prefix}-{n}")
            for n in range(count)
        ]
    }


def test_d1s_endpoints_are_answered_without_the_staff_pages_machinery(client, bearer):
    # No session, language or login: the answer depends on nothing but the request.
    client.cookies["sessionid"] = "not-a-session"
    response = post(client, example_bytes("02"), bearer, HTTP_ACCEPT_LANGUAGE="ja")
    assert response.status_code == 204
    assert "Vary" not in response and "Content-Language" not in response
    assert not response.cookies
    assert response["x-correlation-id"]  # the middleware before it still applies
    # Any other address under D1's prefixes is answered like any unknown page, by the whole stack.
    elsewhere = client.get("/notifications/d1/elsewhere")
    assert elsewhere.status_code == client.get("/elsewhere").status_code == 404
    assert "Content-Security-Policy" in elsewhere and "Vary" in elsewhere


APPLY_QUERIES = 9  # BEGIN and COMMIT included


@pytest.mark.django_db(transaction=True)
def test_a_post_is_one_insert_and_a_batch_costs_the_same_queries_whatever_its_size(
    client, bearer, django_assert_num_queries
):
    # Outside a test transaction, as in production. The answer: the body stored, one INSERT.
    # The applier's batch: take the bodies, lock (creating) the orders, read them, read the
    # events they know, insert the new events, write the orders back, record the outcomes.
    attention.thresholds()  # read once per process every 30 s, not per batch
    for count in (1, 50):
        with django_assert_num_queries(1):
            assert post(client, bulk(count, prefix=f"new{count}"), bearer).status_code == 204
        with django_assert_num_queries(1):
            body = bulk(count, "CARD_PROD_READY", prefix=f"new{count}")
            assert post(client, body, bearer).status_code == 204
    # Only new cards in the batch: no events to compare with, one query less.
    with django_assert_num_queries(APPLY_QUERIES - 1):
        assert applier.apply_pending(limit=4) == 4
    assert CardOrder.objects.filter(stage="CARD_PROD_READY").count() == 51
    for count in (1, 50):
        post(client, bulk(count, "CARD_PROD_ONGOING", prefix=f"new{count}"), bearer)
    post(client, bulk(200, "CARD_PROD_ONGOING", prefix="big"), bearer)
    with django_assert_num_queries(APPLY_QUERIES):
        assert applier.apply_pending() == 3
    assert CardOrder.objects.filter(stage="CARD_PROD_ONGOING").count() == 251


# --- Real HTTP ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_token_and_a_notification_over_real_http(live_server, settings):
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        credentials = (settings.D1_NOTIFY_CLIENT_ID, settings.D1_NOTIFY_CLIENT_SECRET)
        answer = http.post(TOKEN_URL, data={"grant_type": "client_credentials"}, auth=credentials)
        token = answer.json()["access_token"]
        json_type = {"Content-Type": "application/json"}
        refused = http.post(NOTIFY_URL, content=example_bytes("07"), headers=json_type)
        stored = http.post(
            NOTIFY_URL,
            content=example_bytes("07"),
            headers={**json_type, "Authorization": f"Bearer {token}"},
        )
    assert (answer.status_code, refused.status_code, stored.status_code) == (200, 401, 204)
    drain()
    assert CardOrder.objects.get().stage == "CARD_SHIPPED"


@pytest.mark.django_db(transaction=True)
def test_threads_posting_a_shuffled_duplicated_lifecycle_to_a_live_server_converge(
    live_server, bearer, on_postgres
):
    cards = [f"crd-live-{n}" for n in range(3)]
    deliveries = [item for card_id in cards for item in _lifecycle(card_id) * 2]
    seeds = [3, 8, 13, 22]  # 4, 1, 2 and 3 operations per POST
    threads, storm = storm_senders(live_server.url, bearer, deliveries, seeds, 4)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storm.errors == []
    assert set(storm.answers) == {204}
    drain()
    stored = [bytes(body) for body in InboxItem.objects.values_list("body", flat=True)]
    assert sorted(stored) == sorted(storm.sent)
    assert not InboxItem.objects.exclude(outcome=InboxItem.Outcome.PROCESSED).exists()
    for card_id in cards:
        assert _state(card_id) == _in_order_state(card_id)
        order = CardOrder.objects.get(card_id=card_id)
        assert order.events.filter(source=Source.NOTIFICATION).count() == len(LIFECYCLE)
        assert order.duplicates_received == len(seeds) * 2 * len(LIFECYCLE) - len(LIFECYCLE)

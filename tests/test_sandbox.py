"""The D1 sandbox behaves like D1: authentication, status, ordering, lifecycle, faults, pushing."""

import email.utils
import json
import os
import signal
import subprocess
import sys
import threading
import time
from base64 import b64decode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from d1sandbox import keys
from d1sandbox.auth import JWT_BEARER
from d1sandbox.remote import SandboxRemote
from tests.sandbox_fixtures import ISSUER, card
from tracker.d1 import lifecycle as tracker_lifecycle
from tracker.d1.schema import parse_operation

ROOT = Path(__file__).resolve().parent.parent
PROGRESS = [
    "CARD_PROD_REQUESTED",
    "DATA_PREPARED",
    "CARD_PROD_READY",
    "CARD_PROD_ONGOING",
    "CARD_PROD_DONE",
    "CARD_SHIPPED",
]


def assertion(d1_key, *, kid: str | None = None, key: bytes | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": ISSUER, "iat": now, "exp": now + 300, **claims}
    private = key or d1_key.private_key_file.read_bytes()
    return jwt.encode(payload, private, algorithm="ES256", headers={"kid": kid or d1_key.kid})


def token_for(sandbox, d1_key, **claims: Any) -> httpx.Response:
    return httpx.post(
        sandbox.token_url,
        data={"grant_type": JWT_BEARER, "assertion": assertion(d1_key, **claims)},
    )


def bearer(sandbox, d1_key, issuer: str = ISSUER) -> dict[str, str]:
    response = token_for(sandbox, d1_key, iss=issuer, sub=issuer)
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['access_token']}"}


def status_url(sandbox, card_id: str, issuer: str = ISSUER) -> str:
    return f"{sandbox.base_url}/issuers/{issuer}/physicalCards/{card_id}/productionStatus"


@pytest.fixture
def remote(sandbox):
    control = SandboxRemote(sandbox.url)
    yield control
    control.close()


# --- the token endpoint -------------------------------------------------------------------------


def test_a_valid_assertion_gets_a_bearer_token(sandbox, d1_key):
    response = token_for(sandbox, d1_key)

    assert response.status_code == 200
    document = response.json()
    assert document["token_type"] == "Bearer"
    assert document["expires_in"] == 900
    assert len(document["access_token"]) >= 32


def _now() -> int:
    return int(time.time())


def _no_exp(d1_key) -> str:
    private = d1_key.private_key_file.read_bytes()
    return jwt.encode({"iss": ISSUER, "sub": ISSUER}, private, "ES256", {"kid": d1_key.kid})


_UNAUTHORIZED = (401, "AUTHORIZER_UNAUTHORIZED")
_REFUSED = {
    # how: (assertion maker, (status, errorCode), words in the error)
    "wrong key": (lambda k: assertion(k, key=keys.new_private_pem()), _UNAUTHORIZED, "signature"),
    "unknown kid": (lambda k: assertion(k, kid="someone-else"), _UNAUTHORIZED, "kid"),
    "expired": (
        lambda k: assertion(k, iat=_now() - 900, exp=_now() - 60),
        _UNAUTHORIZED,
        "expired",
    ),
    "lives an hour": (lambda k: assertion(k, exp=_now() + 3600), _UNAUTHORIZED, "15 minutes"),
    "iss is not sub": (lambda k: assertion(k, sub="OTHER00001"), _UNAUTHORIZED, "iss and sub"),
    "not a JWT": (lambda k: "not-a-jwt", (400, "PARSING_ERROR"), "not a JWT"),
    "no exp": (_no_exp, (400, "FIELD_INVALID_VALUE"), "exp"),
}


@pytest.mark.parametrize("how", list(_REFUSED))
def test_a_bad_assertion_is_refused_with_d1s_error_body(sandbox, d1_key, how):
    make, (status, error_code), error = _REFUSED[how]

    response = httpx.post(
        sandbox.token_url, data={"grant_type": JWT_BEARER, "assertion": make(d1_key)}
    )

    assert response.status_code == status
    body = response.json()
    assert set(body) == {"errorCode", "error"}
    assert body["errorCode"] == error_code
    assert error in body["error"]
    assert sandbox.state.counters["token.issued"] == 0


def test_a_grant_other_than_jwt_bearer_is_a_400(sandbox, d1_key):
    response = httpx.post(
        sandbox.token_url,
        data={"grant_type": "client_credentials", "assertion": assertion(d1_key)},
    )

    assert response.status_code == 400
    assert response.json()["errorCode"] == "FIELD_INVALID_VALUE"


def test_the_token_endpoint_takes_json_as_well_as_a_form(sandbox, d1_key):
    response = httpx.post(
        sandbox.token_url, json={"grant_type": JWT_BEARER, "assertion": assertion(d1_key)}
    )

    assert response.status_code == 200


def test_tokens_expire(sandbox, d1_key, remote):
    remote.configure(token_ttl=0.3)
    remote.seed(card("crd-exp-1", stage="DATA_PREPARED"))
    headers = bearer(sandbox, d1_key)
    assert httpx.get(status_url(sandbox, "crd-exp-1"), headers=headers).status_code == 200

    time.sleep(0.4)
    response = httpx.get(status_url(sandbox, "crd-exp-1"), headers=headers)

    assert response.status_code == 401
    assert response.json() == {
        "errorCode": "AUTHORIZER_UNAUTHORIZED",
        "error": "Access token expired",
    }


def test_a_token_for_one_issuer_cannot_read_another_issuers_cards(sandbox, d1_key, remote):
    remote.seed(card("crd-other-1", stage="DATA_PREPARED"))

    response = httpx.get(
        status_url(sandbox, "crd-other-1"), headers=bearer(sandbox, d1_key, "OTHER00001")
    )

    assert response.status_code == 403
    assert response.json()["errorCode"] == "AUTHORIZER_FORBIDDEN"


# --- productionStatus and ordering --------------------------------------------------------------


def test_an_unknown_card_is_a_404_with_d1s_error_body(sandbox, d1_key):
    response = httpx.get(status_url(sandbox, "crd-nobody"), headers=bearer(sandbox, d1_key))

    assert response.status_code == 404
    assert response.json() == {"errorCode": "CARD_NOT_FOUND", "error": "Card not found"}


def test_a_request_without_a_token_is_a_401(sandbox, remote):
    remote.seed(card("crd-anon-1", stage="DATA_PREPARED"))

    response = httpx.get(status_url(sandbox, "crd-anon-1"))

    assert response.status_code == 401
    assert response.json()["errorCode"] == "AUTHORIZER_UNAUTHORIZED"


def test_ordering_answers_202_with_the_operation_id_that_status_then_shows(sandbox, d1_key):
    headers = bearer(sandbox, d1_key)
    order_url = f"{sandbox.base_url}/issuers/{ISSUER}/physicalCards/crd-new-1/operations:production"
    body = {"issuerRequestId": "ord-77", "services": {"issuance": "CREATION"}}

    ordered = httpx.post(order_url, json=body, headers=headers)
    again = httpx.post(order_url, json=body, headers=headers)
    status = httpx.get(status_url(sandbox, "crd-new-1"), headers=headers)

    assert ordered.status_code == 202
    operation_id = ordered.json()["operationId"]
    assert again.json()["operationId"] == operation_id  # a retried order is idempotent
    (operation,) = status.json()["operations"]
    assert operation["operationId"] == operation_id
    assert operation["details"]["status"] == "CARD_PROD_REQUESTED"
    assert operation["issuerRequestId"] == "ord-77"
    parse_operation(operation)
    reordered = httpx.post(order_url, json={"issuerRequestId": "ord-78"}, headers=headers)
    assert reordered.json()["operationId"] != operation_id  # a new order is a new operation


def test_the_guides_lowercase_path_works_like_the_api_references(sandbox, d1_key, remote):
    remote.seed(card("crd-case-1", stage="CARD_PROD_READY"))
    url = f"{sandbox.base_url}/issuers/{ISSUER}/physicalcards/crd-case-1/productionstatus"

    response = httpx.get(url, headers=bearer(sandbox, d1_key))

    assert response.json()["operations"][0]["details"]["status"] == "CARD_PROD_READY"


def test_a_malformed_correlation_id_is_refused_like_d1(sandbox, d1_key, remote):
    remote.seed(card("crd-corr-1", stage="CARD_PROD_READY"))
    headers = {**bearer(sandbox, d1_key), "x-correlation-id": "card 4111 1111"}

    response = httpx.get(status_url(sandbox, "crd-corr-1"), headers=headers)

    assert response.status_code == 400
    assert response.json()["errorCode"] == "FIELD_INVALID_FORMAT"


# --- the lifecycle ------------------------------------------------------------------------------


def _walk(remote, card_id: str) -> list[dict]:
    """Make every event of the card visible; return the operation objects, oldest first."""
    remote.advance_card(ISSUER, card_id)
    return _events(remote, card_id)


def _events(remote, card_id: str) -> list[dict]:
    sandbox_card = remote.card(ISSUER, card_id)
    assert all(event["visible"] for event in sandbox_card["events"])
    return sandbox_card["events"]


def test_an_ordered_card_walks_every_stage_then_several_carrier_events(remote):
    remote.configure(data_exception_share=0, cancel_share=0, unknown_status_share=0)
    remote.seed(card("crd-walk-1"))
    assert [e["visible"] for e in remote.card(ISSUER, "crd-walk-1")["events"]][:2] == [True, False]

    events = _walk(remote, "crd-walk-1")

    assert [e["status"] for e in events] == PROGRESS + ["CARD_SHIPPED"] * 3
    assert [e["shipmentStatus"] for e in events][-4:] == [
        "InfoReceived",
        "InTransit",
        "OutForDelivery",
        "Delivered",
    ]
    final = remote.card(ISSUER, "crd-walk-1")["current"]
    operation = parse_operation(final)
    assert operation.status == "SUCCESSFUL" and operation.end_time is not None
    shipment = operation.details.shipment
    assert shipment.carrier and shipment.tracking_number
    assert shipment.tracking_url.startswith("https://")
    assert shipment.tracking_number in shipment.tracking_url
    assert operation.details.due_date and operation.details.production_site


def test_lifecycle_time_is_scaled_by_speed(remote):
    remote.configure(speed=1_000_000, data_exception_share=0, cancel_share=0)
    remote.seed(card("crd-fast-1"))

    time.sleep(0.5)  # two days of D1 time at this speed

    current = remote.card(ISSUER, "crd-fast-1")["current"]
    assert current["details"]["shipment"]["status"] == "Delivered"


def test_advancing_the_clock_ages_every_card(remote):
    remote.configure(data_exception_share=0, cancel_share=0, unknown_status_share=0)
    remote.seed(card("crd-clock-1"), card("crd-clock-2"))

    remote.advance_clock(7 * 24 * 3600)

    for card_id in ("crd-clock-1", "crd-clock-2"):
        assert remote.card(ISSUER, card_id)["current"]["details"]["status"] == "CARD_SHIPPED"


def test_a_card_can_be_advanced_to_a_named_stage(remote):
    remote.configure(data_exception_share=0, cancel_share=0, unknown_status_share=0)
    remote.seed(card("crd-to-1"))

    remote.advance_card(ISSUER, "crd-to-1", to="CARD_PROD_ONGOING")

    assert remote.card(ISSUER, "crd-to-1")["current"]["details"]["status"] == "CARD_PROD_ONGOING"


@pytest.mark.parametrize(
    "share, ending, operation_status",
    [
        ("data_exception_share", "DATA_EXCEPTION", "FAILED"),
        ("cancel_share", "CARD_PROD_CANCELED", "FAILED"),
    ],
)
def test_configured_shares_of_cards_end_in_an_exception(remote, share, ending, operation_status):
    remote.configure(**{"data_exception_share": 0, "cancel_share": 0, share: 1})
    remote.seed(card("crd-end-1"))

    events = _walk(remote, "crd-end-1")

    assert events[-1]["status"] == ending
    final = parse_operation(remote.card(ISSUER, "crd-end-1")["current"])
    assert final.status == operation_status and final.end_time is not None
    assert final.details.reason
    if ending == "DATA_EXCEPTION":
        assert final.error_code and final.error


def test_a_configured_share_of_cards_passes_through_a_status_tracker_does_not_know(remote):
    remote.configure(data_exception_share=0, cancel_share=0, unknown_status_share=1)
    remote.seed(card("crd-unknown-1"))

    statuses = [e["status"] for e in _walk(remote, "crd-unknown-1")]

    unknown = [s for s in statuses if tracker_lifecycle.rank(s) is None]
    assert len(unknown) == 1
    assert statuses.index(unknown[0]) == statuses.index("CARD_PROD_READY") + 1
    assert statuses[-1] == "CARD_SHIPPED"


def test_shares_are_shares_over_many_cards(remote):
    remote.configure(data_exception_share=0.2, cancel_share=0.2, unknown_status_share=0.2)
    remote.seed(*[card(f"crd-many-{n}") for n in range(200)])
    remote.advance_clock(30 * 24 * 3600)

    endings = [
        remote.card(ISSUER, f"crd-many-{n}")["current"]["details"]["status"] for n in range(200)
    ]

    assert 20 <= endings.count("DATA_EXCEPTION") <= 60
    assert 15 <= endings.count("CARD_PROD_CANCELED") <= 60
    assert endings.count("CARD_SHIPPED") >= 80


def test_seeded_operations_are_answered_verbatim_and_the_lifecycle_goes_on(sandbox, d1_key, remote):
    shipped = json.loads(
        (ROOT / "docs/d1/examples/07-notification-card-shipped-first.json").read_text()
    )
    (first,) = shipped["operations"]
    remote.seed({"issuerId": ISSUER, "cardId": first["cardId"], "operations": [first]})

    answered = httpx.get(status_url(sandbox, first["cardId"]), headers=bearer(sandbox, d1_key))
    remote.advance_card(ISSUER, first["cardId"], steps=1)
    following = remote.card(ISSUER, first["cardId"])["current"]

    assert answered.json() == {"operations": [first]}
    assert following["details"]["shipment"]["status"] == "InTransit"
    for key in ("operationId", "startTime", "endTime", "cardId"):
        assert following[key] == first[key]
    assert following["details"]["shipment"]["trackingNumber"] == "6A21458873310"


def test_a_seeded_card_without_lifecycle_stays_where_it_was_put(remote):
    remote.seed(card("crd-still-1", stage="CARD_PROD_ONGOING", lifecycle=False))

    remote.advance_clock(30 * 24 * 3600)

    assert remote.card(ISSUER, "crd-still-1")["current"]["details"]["status"] == "CARD_PROD_ONGOING"


# --- faults -------------------------------------------------------------------------------------


def test_added_latency_slows_every_answer(sandbox, d1_key, remote):
    remote.seed(card("crd-slow-1", stage="DATA_PREPARED"))
    headers = bearer(sandbox, d1_key)
    remote.set_faults(latency_ms=150)
    started = time.monotonic()

    response = httpx.get(status_url(sandbox, "crd-slow-1"), headers=headers)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("retry_after", ["7", email.utils.formatdate(usegmt=True)])
def test_a_429_carries_retry_after_in_seconds_or_as_a_date(sandbox, d1_key, remote, retry_after):
    remote.seed(card("crd-429-1", stage="DATA_PREPARED"))
    headers = bearer(sandbox, d1_key)
    remote.set_faults(next=["429"], retry_after=retry_after)

    response = httpx.get(status_url(sandbox, "crd-429-1"), headers=headers)

    assert response.status_code == 429
    assert response.headers["retry-after"] == retry_after


def test_fault_rates_inject_faults_at_random(sandbox, d1_key, remote):
    remote.seed(card("crd-rate-1", stage="DATA_PREPARED"))
    headers = bearer(sandbox, d1_key)
    remote.set_faults(rates={"503": 0.5, "500": 0.25})

    with httpx.Client(headers=headers) as http:
        statuses = [http.get(status_url(sandbox, "crd-rate-1")).status_code for _ in range(80)]

    assert 25 <= statuses.count(503) <= 55
    assert 8 <= statuses.count(500) <= 35
    assert statuses.count(200) >= 5
    assert remote.counters()["fault.503"] == statuses.count(503)


def test_malformed_json_and_dropped_connections_can_be_injected(sandbox, d1_key, remote):
    remote.seed(card("crd-bad-1", stage="DATA_PREPARED"))
    headers = bearer(sandbox, d1_key)
    remote.set_faults(next=["malformed", "reset"])

    malformed = httpx.get(status_url(sandbox, "crd-bad-1"), headers=headers)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(status_url(sandbox, "crd-bad-1"), headers=headers)

    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    assert [r["fault"] for r in remote.requests()][-2:] == ["malformed", "reset"]


def test_a_hang_outlasts_the_client_and_ends_when_the_sandbox_stops(sandbox, d1_key, remote):
    remote.seed(card("crd-hang-1", stage="DATA_PREPARED"))
    headers = bearer(sandbox, d1_key)
    remote.set_faults(next=["hang"], hang_seconds=60)

    with pytest.raises(httpx.ReadTimeout):
        httpx.get(status_url(sandbox, "crd-hang-1"), headers=headers, timeout=0.3)
    assert remote.requests()[-1]["status"] is None  # logged while still hanging
    started = time.monotonic()
    sandbox.stop()

    assert time.monotonic() - started < 3


def test_the_control_api_names_a_setting_it_does_not_know(remote):
    with pytest.raises(httpx.HTTPStatusError) as raised:
        remote.configure(sped=3)

    assert raised.value.response.status_code == 400
    assert "sped: no such setting" in raised.value.response.json()["error"]
    with pytest.raises(httpx.HTTPStatusError):
        remote.set_faults(next=["teapot"])


# --- pushing notifications ----------------------------------------------------------------------


class Receiver:
    """Stands in for Tracker: its token endpoint (client credentials) and notification endpoint.

    Notification POSTs are answered with the statuses in `answers` first, then 204.
    """

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.posts: list[dict[str, Any]] = []
        self.token_requests: list[str] = []
        self.tokens: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/authz/d1/v1/oauth2/token":
                    self._reply(*receiver.token(self.headers.get("authorization", ""), body))
                else:
                    self._reply(*receiver.notification(self.path, self.headers, body))

            def _reply(self, status: int, document: Any) -> None:
                payload = json.dumps(document).encode() if document is not None else b""
                self.send_response(status)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def token(self, authorization: str, body: bytes) -> tuple[int, Any]:
        credentials = b64decode(authorization.removeprefix("Basic ")).decode()
        self.token_requests.append(credentials)
        if credentials != "d1-test:d1-test-secret" or body != b"grant_type=client_credentials":
            return 401, {"error": "invalid_client"}
        token = f"tok-{len(self.token_requests)}"
        self.tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300}

    def notification(self, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        self.posts.append({"path": path, "token": token, "body": json.loads(body)})
        if token not in self.tokens:
            return 401, None
        return (self.answers.pop(0) if self.answers else 204), None

    def operations(self) -> list[dict[str, Any]]:
        return [
            op
            for post in self.posts
            if post["token"] in self.tokens
            for op in post["body"]["operations"]
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.stop()


def push_to(remote, receiver, **config: Any) -> None:
    remote.configure(
        notify_url=receiver.url,
        notify_client_id="d1-test",
        notify_client_secret="d1-test-secret",
        notify_retry_base=0.01,
        data_exception_share=0,
        cancel_share=0,
        unknown_status_share=0,
        **config,
    )


def test_notifications_go_out_in_bulk_with_a_bearer_token_from_trackers_endpoint(remote, receiver):
    push_to(remote, receiver, notify_batch_size=4)
    remote.seed(*[card(f"crd-push-{n}") for n in range(3)])
    for n in range(3):
        remote.advance_card(ISSUER, f"crd-push-{n}")

    assert remote.flush()["pending"] == 0

    assert receiver.token_requests == ["d1-test:d1-test-secret"]  # one token, reused
    assert {post["path"] for post in receiver.posts} == {
        f"/notifications/d1/v2/issuers/{ISSUER}/cards"
    }
    sizes = [len(post["body"]["operations"]) for post in receiver.posts]
    assert max(sizes) == 4 and sum(sizes) == 3 * 9
    operations = [parse_operation(op) for op in receiver.operations()]
    for n in range(3):
        mine = [op for op in operations if op.card_id == f"crd-push-{n}"]
        assert [op.business_status for op in mine][:6] == PROGRESS
        assert len({op.operation_id for op in mine}) == 1
    assert remote.counters()["notify.delivered"] == 27


def test_only_events_that_became_visible_are_pushed_and_each_once(remote, receiver):
    push_to(remote, receiver)
    remote.seed(card("crd-once-1"))
    remote.flush()
    remote.advance_card(ISSUER, "crd-once-1", steps=2)
    remote.flush()

    statuses = [op["details"]["status"] for op in receiver.operations()]

    assert statuses == ["CARD_PROD_REQUESTED", "DATA_PREPARED", "CARD_PROD_READY"]


def test_a_failed_notification_is_retried_but_a_400_is_not(remote, receiver):
    push_to(remote, receiver, notify_batch_size=50)
    receiver.answers = [503, 500, 204, 400]
    remote.seed(card("crd-retry-1"))
    remote.flush()  # 503, 500, then 204
    remote.advance_card(ISSUER, "crd-retry-1", steps=1)

    remote.flush()  # 400: D1 never retries it

    assert len(receiver.posts) == 4
    assert receiver.posts[0]["body"] == receiver.posts[2]["body"]
    outcomes = [(n["status"], n["outcome"], n["attempts"]) for n in remote.notifications()]
    assert outcomes == [("CARD_PROD_REQUESTED", "delivered", 3), ("DATA_PREPARED", "rejected", 1)]


def test_a_notification_is_given_up_after_the_configured_attempts(remote, receiver):
    push_to(remote, receiver, notify_max_attempts=3)
    receiver.answers = [503] * 10
    remote.seed(card("crd-giveup-1"))

    remote.flush()

    assert len(receiver.posts) == 3
    assert remote.notifications()[-1]["outcome"] == "failed"


def test_a_401_makes_the_pusher_fetch_a_new_token(remote, receiver):
    push_to(remote, receiver)
    remote.seed(card("crd-tok-1"))
    remote.flush()
    receiver.tokens.clear()  # Tracker forgot (or expired) every token
    remote.advance_card(ISSUER, "crd-tok-1", steps=1)

    remote.flush()

    assert len(receiver.token_requests) == 2
    assert [p["token"] for p in receiver.posts] == ["tok-1", "tok-1", "tok-2"]
    assert remote.notifications()[-1]["outcome"] == "delivered"


def test_duplicates_and_drops_follow_their_shares(remote, receiver):
    push_to(remote, receiver, notify_duplicate_share=1.0)
    remote.seed(card("crd-dup-1"))
    remote.flush()
    assert [op["details"]["status"] for op in receiver.operations()] == ["CARD_PROD_REQUESTED"] * 2

    remote.configure(notify_duplicate_share=0.0, notify_drop_share=1.0)
    remote.advance_card(ISSUER, "crd-dup-1")
    remote.flush()

    assert len(receiver.operations()) == 2  # everything after was dropped
    assert remote.counters()["notify.dropped"] == 8
    dropped = [n for n in remote.notifications() if n["outcome"] == "dropped"]
    assert {n["cardId"] for n in dropped} == {"crd-dup-1"}


def test_reordering_delivers_a_later_stage_before_an_earlier_one(remote, receiver):
    push_to(remote, receiver, notify_reorder_share=0.5)
    remote.seed(*[card(f"crd-order-{n}") for n in range(5)])
    for n in range(5):
        remote.advance_card(ISSUER, f"crd-order-{n}", to="CARD_PROD_DONE")

    remote.flush()

    operations = receiver.operations()
    assert len(operations) == 5 * 5  # reordered, never lost
    out_of_order = 0
    for n in range(5):
        ranks = [
            tracker_lifecycle.rank(op["details"]["status"])
            for op in operations
            if op["cardId"] == f"crd-order-{n}"
        ]
        out_of_order += ranks != sorted(ranks)
    assert out_of_order >= 1


def test_the_pusher_runs_on_its_own_when_given_an_interval(remote, receiver):
    push_to(remote, receiver, notify_interval=0.05)
    remote.seed(card("crd-auto-1"))

    deadline = time.monotonic() + 5
    while not receiver.operations() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert [op["cardId"] for op in receiver.operations()] == ["crd-auto-1"]


# --- the command --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["manage.py", "d1_sandbox"], ["-m", "d1sandbox"]], ids=["manage.py", "python -m"]
)
def test_the_d1_sandbox_command_serves_until_it_is_stopped(command, d1_key, tmp_path):
    public = tmp_path / "public.pem"
    public.write_text(d1_key.public_pem)
    process = subprocess.Popen(
        [
            sys.executable,
            *command,
            "--port",
            "0",
            "--public-key",
            str(public),
            "--kid",
            d1_key.kid,
            "--speed",
            "60",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.split()[3]
        remote = SandboxRemote(url)
        assert remote.healthy()
        assert remote.configure()["speed"] == 60
        response = httpx.post(
            f"{url}/authz/v1/oauth2/token",
            data={"grant_type": JWT_BEARER, "assertion": assertion(d1_key)},
        )
        assert response.status_code == 200
        remote.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0

"""The D1 client against the sandbox over real HTTP (httpx.MockTransport only where the sandbox
cannot produce the answer)."""

import email.utils
import logging
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trustme

from d1sandbox.server import Sandbox
from tests.sandbox_fixtures import ISSUER, card, child_env
from tracker.d1 import breaker
from tracker.d1.client import (
    D1BadResponse,
    D1BreakerOpen,
    D1Client,
    D1Error,
    D1NotFound,
    D1Rejected,
    D1Unavailable,
    Profile,
    breaker_state,
    client,
    reset_clients,
)

# The shared cache holds what these tests exercise: run again with REDIS_URL (make test-redis).
pytestmark = [pytest.mark.django_db, pytest.mark.cache]

ROOT = Path(__file__).resolve().parent.parent
CORRELATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def status_requests(d1) -> list[dict]:
    return [r for r in d1.requests() if r["path"].endswith("productionStatus")]


# --- the happy path -------------------------------------------------------------------------------


def test_the_status_of_a_known_card_comes_back_as_parsed_operations(d1):
    d1.seed(card("crd-happy-1", stage="CARD_SHIPPED", issuerRequestId="ord-1"))

    operations = client().get_production_status(ISSUER, "crd-happy-1")

    assert len(operations) == 1
    operation = operations[0]
    assert (operation.card_id, operation.operation, operation.status) == (
        "crd-happy-1",
        "PRODUCE",
        "SUCCESSFUL",
    )
    assert operation.business_status == "CARD_SHIPPED"
    assert operation.issuer_request_id == "ord-1"
    shipment = operation.details.shipment
    assert shipment.carrier and shipment.tracking_number
    assert shipment.tracking_url.startswith("https://")


def test_the_client_is_pooled_per_process_and_profile():
    assert client() is client(Profile.INTERACTIVE)
    assert client(Profile.BACKGROUND) is not client(Profile.INTERACTIVE)


def mocked_d1(answer) -> D1Client:
    """A client whose D1 hands out tokens and otherwise answers with `answer(request)`."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        return answer(request)

    return D1Client(httpx.Client(transport=httpx.MockTransport(handle), base_url="https://d1.test"))


def test_a_bare_operation_object_is_accepted_as_well_as_an_operations_list(d1):
    d1.seed(card("crd-bare-1", stage="CARD_PROD_ONGOING"))
    bare = d1.card(ISSUER, "crd-bare-1")["current"]
    mocked = mocked_d1(lambda request: httpx.Response(200, json=bare))

    (operation,) = mocked.get_production_status(ISSUER, "crd-bare-1")

    assert operation.business_status == "CARD_PROD_ONGOING"


def test_an_answer_about_another_card_is_a_bad_response(d1):
    def answer(request: httpx.Request) -> httpx.Response:
        other = {
            "operationId": "op-1",
            "operation": "PRODUCE",
            "status": "PENDING",
            "startTime": "2025-03-04T08:41:12.305Z",
            "cardId": "crd-someone-else",
            "details": {"status": "CARD_PROD_REQUESTED"},
        }
        return httpx.Response(200, json={"operations": [other]})

    mocked = mocked_d1(answer)

    with pytest.raises(D1BadResponse, match="crd-someone-else"):
        mocked.get_production_status(ISSUER, "crd-mine")


@pytest.mark.parametrize(
    "body, problem",
    [
        # What Python's parser accepts but PostgreSQL could not store, and what it cannot read.
        (b'{"operations": [{"operationId": "op-1", "extra": NaN}]}', "NaN, which is not"),
        (b'{"operations": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", "nested too deeply"),
    ],
)
def test_an_answer_tracker_could_not_store_or_read_is_a_bad_response(d1, body, problem):
    with pytest.raises(D1BadResponse, match=problem):
        mocked_d1(
            lambda request: httpx.Response(
                200, content=body, headers={"content-type": "application/json"}
            )
        ).get_production_status(ISSUER, "crd-mine")


def test_ids_d1_could_never_accept_are_refused_before_any_request(d1):
    with pytest.raises(ValueError, match="cardId"):
        client().get_production_status(ISSUER, "crd/../../admin")
    with pytest.raises(ValueError, match="issuerId"):
        client().get_production_status("short", "crd-1")
    assert d1.requests() == []


# --- the token ------------------------------------------------------------------------------------


def test_one_token_serves_many_calls(d1):
    d1.seed(card("crd-token-1", stage="CARD_PROD_READY"))

    for _ in range(3):
        client().get_production_status(ISSUER, "crd-token-1")

    counters = d1.counters()
    assert counters["token.requests"] == 1
    assert counters["status.requests"] == 3


def test_the_token_lives_in_the_shared_cache_not_in_the_client(d1):
    d1.seed(card("crd-token-2", stage="CARD_PROD_READY"))
    client().get_production_status(ISSUER, "crd-token-2")

    reset_clients()  # what a new process starts with: no client, no connection
    client(Profile.BACKGROUND).get_production_status(ISSUER, "crd-token-2")

    assert d1.counters()["token.requests"] == 1


@pytest.mark.django_db(transaction=True)
def test_another_process_reuses_the_token_this_one_fetched(d1, d1_key, sandbox, database_url):
    d1.seed(card("crd-token-3", stage="CARD_PROD_READY"))
    client().get_production_status(ISSUER, "crd-token-3")
    script = (
        "import django; django.setup()\n"
        "from tracker.d1.client import client\n"
        "print(client().get_production_status('ISS7K2M40Q', 'crd-token-3')[0].business_status)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=child_env(database_url, sandbox, d1_key),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "CARD_PROD_READY"
    counters = d1.counters()
    assert counters["token.requests"] == 1
    assert counters["status.requests"] == 2


def test_a_token_is_fetched_again_before_it_expires(d1):
    d1.configure(token_ttl=2)  # reused for half its life, then refreshed ahead of expiry
    d1.seed(card("crd-token-4", stage="CARD_PROD_READY"))
    client().get_production_status(ISSUER, "crd-token-4")

    time.sleep(1.1)
    client().get_production_status(ISSUER, "crd-token-4")

    assert d1.counters()["token.requests"] == 2
    assert [r["status"] for r in status_requests(d1)] == [200, 200]


def test_a_401_refreshes_the_token_once_and_retries_once(d1):
    d1.seed(card("crd-401-1", stage="DATA_PREPARED"))
    client().get_production_status(ISSUER, "crd-401-1")
    d1.expire_tokens()

    (operation,) = client().get_production_status(ISSUER, "crd-401-1")

    assert operation.business_status == "DATA_PREPARED"
    assert [r["status"] for r in status_requests(d1)] == [200, 401, 200]
    assert d1.counters()["token.requests"] == 2


def test_one_401_on_a_valid_token_is_survived(d1):
    d1.seed(card("crd-401-2", stage="DATA_PREPARED"))
    d1.set_faults(next=["401"])

    client().get_production_status(ISSUER, "crd-401-2")

    assert [r["status"] for r in status_requests(d1)] == [401, 200]
    assert d1.counters()["token.requests"] == 2


def test_a_second_401_is_a_rejection_not_a_loop(d1):
    d1.seed(card("crd-401-3", stage="DATA_PREPARED"))
    d1.set_faults(next=["401", "401", "401"])

    with pytest.raises(D1Rejected) as raised:
        client().get_production_status(ISSUER, "crd-401-3")

    assert raised.value.status_code == 401
    assert raised.value.error_code == "AUTHORIZER_UNAUTHORIZED"
    assert len(status_requests(d1)) == 2


def test_a_key_d1_does_not_know_is_a_rejection_with_d1s_error(d1, settings):
    settings.D1_JWT_KID = "not-onboarded"

    with pytest.raises(D1Rejected) as raised:
        client().get_production_status(ISSUER, "crd-any")

    assert (raised.value.status_code, raised.value.error_code) == (401, "AUTHORIZER_UNAUTHORIZED")
    assert d1.counters().get("status.requests", 0) == 0


def test_a_missing_private_key_is_a_d1_error_that_names_the_file(d1, settings, tmp_path):
    settings.D1_JWT_PRIVATE_KEY_FILE = str(tmp_path / "absent.pem")

    with pytest.raises(D1Error, match="absent.pem"):
        client().get_production_status(ISSUER, "crd-any")


# --- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["503", "502", "504", "429", "reset", "hang", "token:503"])
def test_a_retryable_fault_is_recovered_within_the_budget(d1, settings, fault):
    settings.D1_INTERACTIVE_READ_TIMEOUT = 0.3  # the hang outlasts it
    d1.seed(card("crd-retry-1", stage="CARD_PROD_DONE"))
    d1.set_faults(next=[fault], retry_after="0", hang_seconds=5)
    started = time.monotonic()

    (operation,) = client().get_production_status(ISSUER, "crd-retry-1")

    assert operation.business_status == "CARD_PROD_DONE"
    assert time.monotonic() - started < settings.D1_INTERACTIVE_BUDGET
    assert d1.counters()[f"fault.{fault.removeprefix('token:')}"] == 1
    expected = 1 if fault.startswith("token:") else 2
    assert [r["status"] for r in status_requests(d1)][-1] == 200
    assert len(status_requests(d1)) == expected


def test_retry_after_is_honoured_up_to_its_cap(d1, settings):
    d1.seed(card("crd-retry-2", stage="CARD_PROD_DONE"))
    d1.set_faults(next=["429"], retry_after="1")  # capped to D1_RETRY_AFTER_CAP = 0.3

    client().get_production_status(ISSUER, "crd-retry-2")

    first, second = status_requests(d1)
    assert first["status"] == 429 and second["status"] == 200
    assert 0.25 <= second["at"] - first["at"] < 1.0


def test_a_retry_after_date_beyond_the_budget_ends_the_call_at_once(d1, settings):
    settings.D1_RETRY_AFTER_CAP = 60
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        later = email.utils.formatdate(time.time() + 30, usegmt=True)
        return httpx.Response(429, headers={"retry-after": later})

    mocked = mocked_d1(answer)
    started = time.monotonic()

    with pytest.raises(D1Unavailable, match="no time left"):
        mocked.get_production_status(ISSUER, "crd-1")

    assert len(calls) == 1
    assert time.monotonic() - started < 1


def test_retries_stop_when_their_count_is_spent(d1, settings):
    settings.D1_INTERACTIVE_RETRIES = 2
    d1.seed(card("crd-retry-3", stage="CARD_PROD_DONE"))
    d1.set_faults(next=["503", "503", "503", "503"])

    with pytest.raises(D1Unavailable, match="HTTP 503 after 3 attempt"):
        client().get_production_status(ISSUER, "crd-retry-3")

    assert len(status_requests(d1)) == 3


@pytest.mark.parametrize(
    "fault, error, status_code",
    [
        ("400", D1Rejected, 400),
        ("403", D1Rejected, 403),
        ("409", D1Rejected, 409),
        ("500", D1Unavailable, None),
        ("malformed", D1BadResponse, None),
    ],
)
def test_a_non_retryable_answer_is_its_typed_error_at_once(d1, fault, error, status_code):
    d1.seed(card("crd-fail-1", stage="CARD_PROD_DONE"))
    d1.set_faults(next=[fault])

    with pytest.raises(error) as raised:
        client().get_production_status(ISSUER, "crd-fail-1")

    assert len(status_requests(d1)) == 1
    if status_code:
        assert raised.value.status_code == status_code
        assert raised.value.error_code  # D1's errorCode is kept


def test_an_unknown_card_is_not_found_at_once(d1):
    with pytest.raises(D1NotFound) as raised:
        client().get_production_status(ISSUER, "crd-nobody")

    assert (raised.value.status_code, raised.value.error_code) == (404, "CARD_NOT_FOUND")
    assert len(status_requests(d1)) == 1


def test_the_interactive_profile_gives_up_within_its_budget_while_d1_hangs(d1, settings):
    settings.D1_INTERACTIVE_BUDGET = 1.0
    settings.D1_INTERACTIVE_READ_TIMEOUT = 0.4
    d1.seed(card("crd-hang-1", stage="CARD_PROD_DONE"))
    d1.set_faults(rates={"hang": 1.0}, hang_seconds=20)
    started = time.monotonic()

    with pytest.raises(D1Unavailable):
        client(Profile.INTERACTIVE).get_production_status(ISSUER, "crd-hang-1")

    assert time.monotonic() - started < 1.0 + 0.5
    assert len(status_requests(d1)) >= 2  # it retried while the budget lasted


def test_the_background_profile_tries_longer_than_the_interactive_one(d1, settings):
    settings.D1_INTERACTIVE_RETRIES = 1
    settings.D1_BACKGROUND_RETRIES = 4
    d1.seed(card("crd-bg-1", stage="CARD_PROD_DONE"))
    d1.set_faults(next=["503"] * 4)

    with pytest.raises(D1Unavailable):
        client(Profile.INTERACTIVE).get_production_status(ISSUER, "crd-bg-1")
    (operation,) = client(Profile.BACKGROUND).get_production_status(ISSUER, "crd-bg-1")

    assert operation.business_status == "CARD_PROD_DONE"
    assert [r["status"] for r in status_requests(d1)] == [503, 503, 503, 503, 200]


# --- the circuit breaker --------------------------------------------------------------------------


def test_the_breaker_opens_fails_fast_and_closes_after_a_good_probe(d1, settings):
    settings.D1_BREAKER_THRESHOLD = 2
    settings.D1_BREAKER_COOLDOWN = 60
    settings.D1_INTERACTIVE_RETRIES = 0
    d1.seed(card("crd-breaker-1", stage="CARD_PROD_DONE"))
    d1.set_faults(rates={"503": 1.0})

    for _ in range(2):
        with pytest.raises(D1Unavailable):
            client().get_production_status(ISSUER, "crd-breaker-1")
    assert breaker_state()["state"] == "open"
    assert breaker_state()["failures"] == 2
    with pytest.raises(D1BreakerOpen):
        client().get_production_status(ISSUER, "crd-breaker-1")
    assert len(status_requests(d1)) == 2  # failing fast: D1 was not asked

    d1.set_faults()  # D1 recovers
    settings.D1_BREAKER_COOLDOWN = 0  # and the cool-down is over
    assert breaker_state()["state"] == "half_open"
    client().get_production_status(ISSUER, "crd-breaker-1")

    assert breaker_state() == {"state": "closed", "failures": 0, "opened_at": None}
    assert len(status_requests(d1)) == 3


def test_a_failed_probe_opens_the_breaker_for_another_cool_down(d1, settings):
    settings.D1_BREAKER_THRESHOLD = 1
    settings.D1_BREAKER_COOLDOWN = 0  # the cool-down is over as soon as the breaker opens
    settings.D1_INTERACTIVE_RETRIES = 0
    d1.seed(card("crd-breaker-2", stage="CARD_PROD_DONE"))
    d1.set_faults(rates={"503": 1.0})
    with pytest.raises(D1Unavailable):
        client().get_production_status(ISSUER, "crd-breaker-2")
    first_opened = breaker_state()["opened_at"]

    with pytest.raises(D1Unavailable) as probe:
        client().get_production_status(ISSUER, "crd-breaker-2")

    assert not isinstance(probe.value, D1BreakerOpen)  # the probe reached D1
    assert len(status_requests(d1)) == 2
    settings.D1_BREAKER_COOLDOWN = 60
    assert breaker_state()["state"] == "open"
    assert breaker_state()["opened_at"] >= first_opened
    with pytest.raises(D1BreakerOpen):
        client().get_production_status(ISSUER, "crd-breaker-2")


def test_only_one_caller_probes_while_the_breaker_is_half_open(d1, settings):
    settings.D1_BREAKER_THRESHOLD = 1
    settings.D1_BREAKER_COOLDOWN = 0.0
    breaker.record_failure(None)

    ticket = breaker.admit(probe_seconds=5)

    assert ticket is not None
    with pytest.raises(D1BreakerOpen, match="another call is probing"):
        breaker.admit(probe_seconds=5)


def test_answers_from_d1_count_as_success_for_the_breaker(d1, settings):
    settings.D1_BREAKER_THRESHOLD = 2
    settings.D1_INTERACTIVE_RETRIES = 0
    d1.set_faults(next=["503"])
    with pytest.raises(D1Unavailable):
        client().get_production_status(ISSUER, "crd-nobody")

    with pytest.raises(D1NotFound):
        client().get_production_status(ISSUER, "crd-nobody")

    assert breaker_state()["failures"] == 0


# --- correlation and logs -------------------------------------------------------------------------


def test_every_call_sends_a_fresh_well_formed_correlation_id_and_logs_it(d1, caplog):
    d1.seed(card("crd-corr-1", stage="CARD_PROD_DONE"))
    d1.set_faults(next=["503"])

    with caplog.at_level(logging.INFO, logger="tracker.d1.client"):
        for _ in range(3):
            client().get_production_status(ISSUER, "crd-corr-1")

    requests = d1.requests()
    ids = [r["correlationId"] for r in requests]
    assert all(ids) and all(CORRELATION_ID.fullmatch(i) for i in ids)
    assert "crd-corr-1" not in "".join(ids)
    calls = [r for r in status_requests(d1) if r["status"] == 200]
    assert len({r["correlationId"] for r in calls}) == 3  # one per call, retries share it
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "200 after 2 attempt(s)" in lines[0]
    for line, call in zip(lines, calls, strict=True):
        assert call["correlationId"] in line
        assert re.search(r"in \d+ ms", line)


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def tls_sandbox(d1_key, tmp_path):
    """A sandbox on HTTPS that requires a client certificate from the test CA."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("tracker-client.example", common_name="tracker-client.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    running = Sandbox(keys={d1_key.kid: d1_key.public_pem}).start(ssl_context=context)
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client_cert.private_key_pem.write_to_path(str(paths["key"]))
    yield running, paths
    running.stop()


def _point_at(settings, running, d1_key):
    settings.D1_BASE_URL = running.base_url
    settings.D1_TOKEN_URL = running.token_url
    settings.D1_JWT_PRIVATE_KEY_FILE = str(d1_key.private_key_file)
    settings.D1_JWT_KID = d1_key.kid


def test_over_mtls_the_client_presents_its_certificate_and_trusts_only_d1s_ca(
    tls_sandbox, d1_key, settings
):
    running, paths = tls_sandbox
    running.state.seed(card("crd-tls-1", stage="CARD_PROD_READY"))
    _point_at(settings, running, d1_key)
    settings.D1_TLS_CA_BUNDLE = paths["ca"]
    settings.D1_TLS_CLIENT_CERT = paths["cert"]
    settings.D1_TLS_CLIENT_KEY = paths["key"]

    (operation,) = client().get_production_status(ISSUER, "crd-tls-1")

    assert operation.business_status == "CARD_PROD_READY"
    seen = list(running.state.requests)
    assert [r["path"].rsplit("/", 1)[-1] for r in seen] == ["token", "productionStatus"]
    assert all("tracker-client.example" in r["clientCert"] for r in seen)


def test_without_a_client_certificate_mtls_fails_without_retrying(tls_sandbox, d1_key, settings):
    running, paths = tls_sandbox
    _point_at(settings, running, d1_key)
    settings.D1_TLS_CA_BUNDLE = paths["ca"]

    with pytest.raises(D1Unavailable):
        client().get_production_status(ISSUER, "crd-tls-2")

    assert running.state.counters["token.requests"] == 0


def test_a_server_certificate_from_another_ca_is_refused_at_once(tls_sandbox, d1_key, settings):
    running, paths = tls_sandbox
    _point_at(settings, running, d1_key)
    settings.D1_TLS_CLIENT_CERT = paths["cert"]
    settings.D1_TLS_CLIENT_KEY = paths["key"]  # the system CAs do not know the test CA

    with pytest.raises(D1Unavailable, match="TLS"):
        client().get_production_status(ISSUER, "crd-tls-3")

    assert list(running.state.requests) == []

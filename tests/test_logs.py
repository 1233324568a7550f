"""Log lines: JSON when asked, with the correlation id of the D1 call or the request, and never a
secret or a card number, whatever the code that logs."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tests.conftest import ISSUER, NOTIFY_URL, TOKEN_URL, basic, make_operation
from tests.sandbox_fixtures import card
from tracker import pan
from tracker.d1.client import client as d1_client
from tracker.ops import logs

pytestmark = pytest.mark.django_db

PAN = "4111111111111111"  # a test card number: passes the Luhn check
SPACED_PAN = "4111 1111 1111 1111"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line of every logger, as the deployed JSON handler writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def _records(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_no_secret_and_no_card_number_reaches_a_log_line(client, d1, settings, log_lines):
    settings.D1_NOTIFY_CLIENT_SECRET = "notify-secret-5f1c9a2e"
    # Our token endpoint: refused and granted; the granted token is a secret too.
    client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic(secret="wrong-pw"))
    granted = client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic())
    token = granted.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    # A notification whose fields carry a card number where none belongs, and bodies that fail.
    body = {"operations": [make_operation("CARD_PROD_REQUESTED", details__reason=f"PAN {PAN}")]}
    client.post(NOTIFY_URL, json.dumps(body), content_type="application/json", headers=auth)
    client.post(
        NOTIFY_URL, f'{{"pan": "{SPACED_PAN}"', content_type="application/json", headers=auth
    )
    bad = {"operations": [{"cardId": PAN, "operationId": 7}]}
    client.post(NOTIFY_URL, json.dumps(bad), content_type="application/json", headers=auth)
    client.post(
        NOTIFY_URL,
        b"{}",
        content_type="application/json",
        headers={"Authorization": "Bearer " + token[::-1]},
    )
    # A D1 call: the JWT assertion and D1's access token.
    d1.seed(card("crd-logs-1", stage="CARD_PROD_READY"))
    d1_client().get_production_status(ISSUER, "crd-logs-1")
    # Code that logs carelessly.
    careless = logging.getLogger("tracker.careless")
    careless.warning(
        "card %s with secret %s and %s", PAN, settings.SECRET_KEY, settings.D1_NOTIFY_CLIENT_SECRET
    )
    try:
        raise ValueError(f"bad card {SPACED_PAN}")
    except ValueError:
        careless.exception("failed for %s", token)

    text = log_lines.getvalue()
    assert len(_records(log_lines)) >= 6
    for secret in (settings.SECRET_KEY, settings.D1_NOTIFY_CLIENT_SECRET, token, "wrong-pw"):
        assert secret not in text
    assert PAN not in text and SPACED_PAN not in text
    assert "eyJ" not in text  # no JWT (our assertion or D1's token)
    assert pan.mask_pans(PAN) in text


def test_a_d1_calls_log_line_carries_its_correlation_id(d1, log_lines):
    d1.seed(card("crd-logs-2", stage="CARD_PROD_READY"))
    d1_client().get_production_status(ISSUER, "crd-logs-2")
    sent = {r.get("correlationId") for r in d1.requests()} - {None}
    calls = [r for r in _records(log_lines) if r["logger"] == "tracker.d1.client"]
    assert calls, "the call was logged"
    line = calls[-1]
    assert line["correlation_id"] in line["message"]
    assert line["correlation_id"] != "-"
    assert line["correlation_id"] in sent
    assert {"time", "level", "logger", "message", "correlation_id"} <= set(line)


def test_a_requests_log_lines_carry_the_callers_correlation_id(client, log_lines):
    response = client.post(
        NOTIFY_URL,
        b"{}",
        content_type="application/json",
        headers={"x-correlation-id": "d1-abc_123"},
    )
    assert response.status_code == 401
    assert response["x-correlation-id"] == "d1-abc_123"
    lines = [r for r in _records(log_lines) if r["correlation_id"] == "d1-abc_123"]
    assert any("refused" in r["message"] for r in lines)


def test_a_malformed_correlation_id_is_replaced(client):
    response = client.get("/livez", headers={"x-correlation-id": "no spaces allowed"})
    assert response["x-correlation-id"] != "no spaces allowed"
    assert len(response["x-correlation-id"]) == 22


def test_ordinary_numbers_are_left_alone():
    assert logs.scrub("inbox 1234 applied 4111111111111112 cards") == (
        "inbox 1234 applied 4111111111111112 cards"
    )
    assert logs.scrub("tracking 1Z999AA10123456784") == "tracking 1Z999AA10123456784"


def test_one_setting_turns_every_line_into_json(tmp_path):
    import os
    import subprocess
    import sys

    program = (
        "import django, logging; django.setup();"
        f" logging.getLogger('tracker.example').warning('card %s', '{PAN}')"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tracker.settings", "DJANGO_DEBUG": "1"}
    plain = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)
    env["TRACKER_LOG_JSON"] = "1"
    structured = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True
    )
    assert plain.stderr.rstrip().endswith(f"WARNING tracker.example card {pan.mask_pans(PAN)}")
    line = json.loads(structured.stderr.strip().splitlines()[-1])
    assert line["message"] == f"card {pan.mask_pans(PAN)}" and line["correlation_id"] == "-"
    assert (line["level"], line["logger"]) == ("WARNING", "tracker.example")

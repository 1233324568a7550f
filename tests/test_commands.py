import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ISSUER
from tests.conftest import run_command as run
from tracker.models import InboxItem

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
CARD = "crd-ev-2025-000731"


def ingest_all() -> str:
    files = [str(p) for p in sorted(EXAMPLES.glob("*.json")) if not p.name.startswith("13")]
    return run("ingest_notification", *files, "--issuer", ISSUER)[1]


def test_ingest_notification_prints_one_line_per_operation_with_its_verdict():
    output = ingest_all()
    lines = output.splitlines()
    assert len(lines) == 16  # 13 single-operation files + the 4-operation bulk file - 1
    assert lines[0].endswith(f"#0: {CARD} CARD_PROD_REQUESTED -> applied")
    assert any(line.endswith("CARD_PROD_QUALITY_REVIEW -> unrecognized") for line in lines)
    assert InboxItem.objects.count() == 13


def test_ingest_notification_names_a_rejected_body(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"operations": "none"}')
    code, output, _ = run("ingest_notification", str(bad))
    assert code == 0
    assert "rejected: operations: must be a list" in output
    assert InboxItem.objects.get().outcome == InboxItem.Outcome.REJECTED


def test_ingest_notification_reads_again_and_counts_duplicates():
    ingest_all()
    output = run("ingest_notification", str(EXAMPLES / "07-notification-card-shipped-first.json"))[
        1
    ]
    assert output.strip().endswith("CARD_SHIPPED -> duplicate")
    data = json.loads(run("card_status", ISSUER, CARD, "--json")[1])
    assert data["duplicatesReceived"] == 1


def test_card_status_json_follows_the_contract():
    ingest_all()
    code, output, _ = run("card_status", ISSUER, CARD, "--json")
    data = json.loads(output)
    assert code == 0
    assert set(data) == {
        "issuerId", "cardId", "operationId", "stage", "operationStatus", "unrecognizedStatus",
        "conflict", "issuerRequestId", "inputFileName", "dueDate", "late", "productionSite",
        "errorCode", "error", "reason", "startTime", "endTime", "shipment", "lastEventAt",
        "lastCheckedAt", "duplicatesReceived", "history",
    }  # fmt: skip
    assert data["stage"] == "CARD_SHIPPED" and data["unrecognizedStatus"] is None
    assert data["dueDate"] == "2025-03-05" and data["late"] is False
    assert data["startTime"] == "2025-03-04T08:41:12.305Z"
    assert data["shipment"]["status"] == "Delivered"
    assert data["lastCheckedAt"] is None and data["duplicatesReceived"] == 0
    assert [h["stage"] for h in data["history"]][:2] == ["CARD_PROD_REQUESTED", "DATA_PREPARED"]
    assert data["history"][7] == {
        "stage": "CARD_PROD_QUALITY_REVIEW",
        "operationStatus": "PENDING",
        "shipmentStatus": None,
        "source": "notification",
        "verdict": "unrecognized",
        "receivedAt": data["history"][7]["receivedAt"],
    }
    assert all(h["receivedAt"].endswith("Z") for h in data["history"])


def test_card_status_text_shows_stage_flags_and_history():
    ingest_all()
    code, output, _ = run("card_status", ISSUER, "crd-ev-2025-000744")
    assert code == 0
    assert output.startswith(f"{ISSUER}/crd-ev-2025-000744  DATA_EXCEPTION  FAILED")
    assert "FIELD_INVALID_VALUE" in output and "Embossing line 2" in output


def test_card_status_exits_1_for_an_unknown_card():
    code, output, error = run("card_status", ISSUER, "crd-nobody")
    assert (code, output) == (1, "")
    assert "No order for card crd-nobody" in error


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tracker.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be 0 or 1"),
        ({"D1_MAX_RPS": "fast"}, "D1_MAX_RPS must be a number"),
        ({"D1_ISSUER_IDS": "short"}, "D1_ISSUER_IDS: 'short' is not a 10-character issuerId"),
        ({"D1_NOTIFY_AUTH": "trust-me"}, "D1_NOTIFY_AUTH must be one of"),
        ({"D1_PRODUCTION_SITE_TZ": "PC-1=Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"D1_TLS_CA_BUNDLE": "/nonexistent.pem"}, "D1_TLS_CA_BUNDLE names a file"),
        ({"D1_RETRY_STATUSES": "503,soon"}, "D1_RETRY_STATUSES must list whole numbers"),
        ({"D1_JWT_LIFETIME": "3600"}, "D1_JWT_LIFETIME must be at most 900"),
        ({"D1_INTERACTIVE_BUDGET": "-1"}, "D1_INTERACTIVE_BUDGET must be at least 0.1"),
        ({"DJANGO_DEBUG": "0", "D1_NOTIFY_AUTH": "none"}, "D1_NOTIFY_AUTH=none is for the demo"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_message_naming_it(env, message):
    base = {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "x" * 50, "D1_NOTIFY_CLIENT_SECRET": "s"}
    result = _manage("check", **{**base, **env})
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# The documented production variables, as few as a deployment needs.
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k" * 30 + "-production-secret-key-from-env-0123456789",
    "DJANGO_ALLOWED_HOSTS": "tracker.example.com",
    "D1_NOTIFY_CLIENT_SECRET": "from-the-secret-store",
}


def deploy_check(**env: str) -> subprocess.CompletedProcess:
    """`check --deploy` failing on any warning, with the production variables and `env`."""
    return _manage("check", "--deploy", "--fail-level", "WARNING", **{**PRODUCTION_ENV, **env})


def test_production_settings_pass_the_deploy_check_without_warnings():
    result = deploy_check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout

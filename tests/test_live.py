"""Live refresh (tracker/live.py) and `card_status --live` against the sandbox."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_command as run
from tests.sandbox_fixtures import ISSUER, card, child_env
from tracker import live
from tracker.d1.client import D1NotFound, D1Unavailable
from tracker.models import CardOrder, Outcome, Source, TimelineEvent

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def test_a_refresh_applies_what_d1_says_through_the_ingest(d1):
    d1.seed(card("crd-live-1", stage="CARD_SHIPPED", issuerRequestId="ord-live-1"))

    result = live.refresh(ISSUER, "crd-live-1")

    order = CardOrder.objects.get(issuer_id=ISSUER, card_id="crd-live-1")
    assert result.order_id == order.pk
    assert result.changed is True
    assert [r.verdict for r in result.results] == [Outcome.APPLIED]
    assert order.stage == "CARD_SHIPPED" and order.issuer_request_id == "ord-live-1"
    assert order.last_checked_at is not None
    event = order.events.get()
    assert (event.source, event.verdict) == (Source.ON_DEMAND, Outcome.APPLIED)


def test_a_second_refresh_with_nothing_new_changes_nothing_but_the_check_time(d1):
    d1.seed(card("crd-live-2", stage="CARD_PROD_ONGOING", lifecycle=False))
    live.refresh(ISSUER, "crd-live-2")
    first_check = CardOrder.objects.get(card_id="crd-live-2").last_checked_at

    result = live.refresh(ISSUER, "crd-live-2")

    assert result.changed is False
    assert CardOrder.objects.get(card_id="crd-live-2").last_checked_at > first_check
    assert TimelineEvent.objects.filter(order_id=result.order_id).count() == 1


def test_a_refresh_moves_the_order_on_when_d1_has_moved_on(d1):
    d1.seed(card("crd-live-3", stage="CARD_PROD_READY"))
    live.refresh(ISSUER, "crd-live-3")
    d1.advance_card(ISSUER, "crd-live-3", to="CARD_PROD_DONE")

    result = live.refresh(ISSUER, "crd-live-3", source=Source.RECONCILE)

    assert result.changed is True
    order = CardOrder.objects.get(card_id="crd-live-3")
    assert order.stage == "CARD_PROD_DONE"
    assert order.events.latest("id").source == Source.RECONCILE


def test_a_card_d1_does_not_know_is_flagged_and_the_error_raised(d1):
    CardOrder.objects.create(issuer_id=ISSUER, card_id="crd-gone-1")

    with pytest.raises(D1NotFound):
        live.refresh(ISSUER, "crd-gone-1")

    order = CardOrder.objects.get(card_id="crd-gone-1")
    assert order.unknown_to_d1 is True and order.last_checked_at is not None
    d1.seed(card("crd-gone-1", stage="DATA_PREPARED"))
    live.refresh(ISSUER, "crd-gone-1")
    assert CardOrder.objects.get(card_id="crd-gone-1").unknown_to_d1 is False


def test_a_card_d1_does_not_know_creates_no_order(d1):
    with pytest.raises(D1NotFound):
        live.refresh(ISSUER, "crd-never-1")

    assert not CardOrder.objects.filter(card_id="crd-never-1").exists()


def test_when_d1_is_unavailable_the_order_is_left_as_it_was(d1, settings):
    settings.D1_INTERACTIVE_RETRIES = 0
    CardOrder.objects.create(issuer_id=ISSUER, card_id="crd-down-1")
    d1.seed(card("crd-down-1", stage="DATA_PREPARED"))
    d1.set_faults(rates={"503": 1.0})

    with pytest.raises(D1Unavailable):
        live.refresh(ISSUER, "crd-down-1")

    order = CardOrder.objects.get(card_id="crd-down-1")
    assert order.last_checked_at is None and order.stage == ""


def test_card_status_live_fetches_applies_and_prints(d1):
    d1.seed(card("crd-cmd-1", stage="CARD_SHIPPED"))

    code, output, error = run("card_status", ISSUER, "crd-cmd-1", "--live")

    assert (code, error) == (0, "")
    assert output.startswith(f"{ISSUER}/crd-cmd-1  CARD_SHIPPED  SUCCESSFUL")
    assert "on_demand" in output


def test_card_status_live_exits_1_when_d1_does_not_know_the_card(d1):
    code, output, error = run("card_status", ISSUER, "crd-cmd-nobody", "--live")

    assert (code, output) == (1, "")
    assert error.strip() == f"D1 does not know card crd-cmd-nobody of issuer {ISSUER}."


def test_card_status_live_exits_2_with_a_one_line_reason_when_d1_is_unavailable(d1, settings):
    settings.D1_INTERACTIVE_RETRIES = 1
    d1.seed(card("crd-cmd-2", stage="CARD_SHIPPED"))
    d1.set_faults(rates={"503": 1.0})

    code, output, error = run("card_status", ISSUER, "crd-cmd-2", "--live")

    assert (code, output) == (2, "")
    assert error.startswith("D1 unavailable: productionStatus: HTTP 503 after 2 attempt(s)")
    assert len(error.strip().splitlines()) == 1


def test_card_status_live_refuses_an_id_d1_could_never_accept(d1):
    code, _, error = run("card_status", ISSUER, "not a card id", "--live")

    assert code == 1
    assert "is not a D1 cardId" in error


@pytest.mark.django_db(transaction=True)
def test_card_status_live_json_keeps_stdout_pure_json_in_a_real_process(
    d1, d1_key, sandbox, database_url
):
    d1.seed(card("crd-cmd-3", stage="CARD_PROD_DONE"))
    env = child_env(database_url, sandbox, d1_key, DJANGO_LOG_LEVEL="INFO")

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )

    found = manage("card_status", ISSUER, "crd-cmd-3", "--live", "--json")
    d1.set_faults(rates={"503": 1.0})
    down = manage("card_status", ISSUER, "crd-cmd-3", "--live")

    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["stage"] == "CARD_PROD_DONE"
    assert down.returncode == 2
    assert "Traceback" not in down.stderr
    assert "D1 unavailable: productionStatus: HTTP 503" in down.stderr

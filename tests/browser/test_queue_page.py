"""A supervisor works the queue in a real browser: filter, open a timeline, re-check with D1."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.conftest import CONTEXT, log_in, serious_accessibility_violations
from tests.conftest import ISSUER, op
from tests.sandbox_fixtures import card
from tests.test_recheck import run_worker, worker_env
from tracker import ingest
from tracker.models import CardOrder, Source

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def supervisor_login(transactional_db):
    from django.apps import apps
    from django.contrib.auth.models import Group, User

    from tracker import roles

    roles.sync_groups(apps)
    user = User.objects.create_user("sup-browser", password="sup-browser-pw", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.SUPERVISORS))
    return user.username, "sup-browser-pw"


@pytest.fixture
def queue_orders(d1):
    old = timezone.now() - timedelta(days=4)
    for card_id, stage in (("crd-q-late", "CARD_PROD_ONGOING"), ("crd-q-quiet", "CARD_PROD_READY")):
        ingest.apply(
            ISSUER,
            op(stage, cardId=card_id, details__dueDate="2020-01-01"),
            Source.NOTIFICATION,
            received_at=old,
        )
    ingest.apply(
        ISSUER, op("DATA_EXCEPTION", cardId="crd-q-bad", status="FAILED"), Source.NOTIFICATION
    )
    d1.seed(card("crd-q-late", stage="CARD_SHIPPED"), card("crd-q-quiet", stage="CARD_PROD_DONE"))


def test_a_supervisor_filters_opens_a_timeline_and_re_checks_with_d1(
    live_server, page, supervisor_login, queue_orders, sandbox, d1_key, database_url, artifacts
):
    log_in(page, live_server.url, supervisor_login, path="/stuck/")
    table = page.locator("#queue-table")
    expect(table).to_contain_text("crd-q-late")
    expect(page.locator("#queue-overview")).to_contain_text("3 orders need attention")

    page.get_by_label("Reason", exact=True).select_option("exception")
    expect(table).not_to_contain_text("crd-q-late")
    expect(table).to_contain_text("crd-q-bad")
    assert "reason=exception" in page.url  # the filter is in the address: bookmarkable

    page.get_by_label("Reason", exact=True).select_option("late")
    expect(table).to_contain_text("crd-q-late")
    row = page.locator("#queue-table tbody", has_text="crd-q-late")
    row.get_by_role("link", name="Timeline").click()
    expect(row.locator("tr.detail")).to_contain_text("In production")

    page.get_by_label("Select all on this page").check()
    page.get_by_role("button", name="Re-check selected with D1").click()
    expect(page.locator("#recheck-progress")).to_contain_text("Re-checking with D1: 0 of 2")
    worker = run_worker(worker_env(database_url, sandbox, d1_key))
    assert worker.returncode == 0, worker.stderr[-2000:]
    expect(page.locator("#recheck-progress")).to_contain_text(
        "2 checked, 2 changed, 0 failed", timeout=10_000
    )
    assert CardOrder.objects.get(card_id="crd-q-late").stage == "CARD_SHIPPED"

    # Acknowledge the order D1 failed: its form comes on demand, and the row leaves the queue.
    page.get_by_label("Reason", exact=True).select_option("exception")
    row = page.locator("#queue-table tbody", has_text="crd-q-bad")
    row.get_by_role("link", name="Acknowledge or snooze").click()
    row.get_by_label("Note").fill("Re-ordered by the branch")
    row.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("#queue-table")).not_to_contain_text("crd-q-bad")
    assert CardOrder.objects.get(card_id="crd-q-bad").muted_until is not None


def test_the_queue_has_no_serious_accessibility_violations(
    live_server, chromium, supervisor_login, queue_orders, artifacts
):
    # axe is injected as a script tag, which the strict CSP would block.
    context = chromium.new_context(**CONTEXT, bypass_csp=True)
    page = context.new_page()
    log_in(page, live_server.url, supervisor_login, path="/stuck/")
    expect(page.locator("#queue-overview")).to_contain_text("orders need attention")
    row = page.locator("#queue-table tbody", has_text="crd-q-late")
    row.get_by_role("link", name="Timeline").click()
    expect(row.locator("tr.detail")).to_contain_text("In production")
    row.get_by_role("link", name="Acknowledge or snooze").click()
    expect(row.get_by_label("Note")).to_be_visible()
    problems = serious_accessibility_violations(page)
    page.screenshot(path=str(artifacts / "queue.png"), full_page=True)
    context.close()
    assert problems == []

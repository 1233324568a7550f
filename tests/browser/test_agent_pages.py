"""An agent finds a customer's card and reads its timeline, in a real browser."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import CONTEXT, log_in, serious_accessibility_violations
from tests.conftest import ISSUER, op
from tracker import ingest
from tracker.models import CardOrder, Source

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CARD = "crd-ev-2025-000731"
KEYS = {
    "card ID": CARD,
    "issuer request ID": "ord-2025-000731",
    "operation ID": "3f2c9a51-7d1e-4c1b-9a8e-5b0e2f6a0731",
    "tracking number": "6A12345678901",
    "input file name": "CI_EV_20250304_01.json",
    "customer reference": "CUST-88-4410",
}
T0 = datetime(2025, 3, 4, 8, 41, 12, tzinfo=UTC)


@pytest.fixture
def card(agent_login) -> CardOrder:
    """A shipped card with carrier updates, a stale and an unrecognized event, and a neighbour."""
    common = {
        "cardId": CARD,
        "operationId": KEYS["operation ID"],
        "issuerRequestId": KEYS["issuer request ID"],
        "inputFileName": KEYS["input file name"],
        "details__dueDate": "2025-03-05",
        "details__productionSite": "PC-FR-GEM-01",
    }
    shipment = {
        "carrier": "la-poste-colissimo",
        "trackingNumber": KEYS["tracking number"],
        "trackingUrl": "https://www.laposte.fr/outils/suivre-vos-envois?code=6A12345678901",
    }
    story = [
        op("CARD_PROD_REQUESTED", **common),
        op("DATA_PREPARED", **common),
        op("CARD_PROD_ONGOING", **common),
        op("CARD_PROD_DONE", **common),
        op(
            "CARD_SHIPPED",
            **common,
            status="SUCCESSFUL",
            endTime="2025-03-05T10:12:00Z",
            details__shipment={**shipment, "status": "InTransit", "message": "Parcel sorted."},
        ),
        op("CARD_PROD_READY", **common),  # arrives late: stale
        op(
            "CARD_SHIPPED",
            **common,
            status="SUCCESSFUL",
            endTime="2025-03-05T10:12:00Z",
            details__shipment={**shipment, "status": "Delivered", "message": "Delivered."},
        ),
    ]
    for hours, operation in enumerate(story):
        ingest.apply(
            ISSUER, operation, Source.NOTIFICATION, received_at=T0 + timedelta(hours=hours)
        )
    ingest.apply(ISSUER, op("CARD_PROD_ONGOING", cardId=f"{CARD}9"), Source.NOTIFICATION)
    ingest.apply(ISSUER, op("CARD_PROD_QUALITY_REVIEW", cardId=f"{CARD}8"), Source.NOTIFICATION)
    order = CardOrder.objects.get(card_id=CARD)
    order.customer_reference = KEYS["customer reference"]
    order.save(update_fields=["customer_reference"])
    return order


def test_an_agent_logs_in_finds_the_card_by_every_key_and_reads_its_timeline(
    live_server, page, card, agent_login, artifacts
):
    problems = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    log_in(page, live_server.url, agent_login)

    expect(page.get_by_role("heading", name="Find a card")).to_be_visible()
    expect(page.locator("#q")).to_be_focused()
    expect(page.locator(".who")).to_have_text("Aiko")
    for kind, key in KEYS.items():
        page.locator("#q").fill(key)
        page.keyboard.press("Enter")
        expect(page, f"searching by {kind}").to_have_url(re.compile(f"/cards/{ISSUER}/{CARD}/$"))
        expect(page.get_by_role("heading", level=1)).to_contain_text(CARD)
        page.get_by_role("link", name="Find another card").click()

    page.locator("#q").fill("crd-ev-2025")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="3 cards start with “crd-ev-2025”")).to_be_visible()
    page.screenshot(path=artifacts / "search.png", full_page=True)

    page.get_by_role("link", name=CARD, exact=True).click()
    # The browser's zone (Asia/Tokyo) reached the server through tz.js and the tz cookie.
    expect(page.locator(".zone")).to_have_text("Times in Asia/Tokyo")
    expect(page.locator("#card-header .badge").first).to_have_text("Shipped")
    expect(
        page.get_by_role("link", name=re.compile("Open the carrier's tracking page"))
    ).to_be_visible()
    rows = page.locator("#timeline tbody tr")
    expect(rows).to_have_count(7)
    expect(rows.first).to_contain_text("Delivered.")
    expect(rows.nth(1)).to_contain_text("Stale")
    expect(rows.last).to_contain_text("2025-03-04 17:41")  # 08:41 UTC in Tokyo
    page.screenshot(path=artifacts / "card.png", full_page=True)

    page.keyboard.press("Tab")  # the first stop is the skip link
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    assert problems == [], "the strict CSP blocked something, or a script failed"


def test_search_and_card_pages_have_no_serious_accessibility_violations(
    live_server, chromium, card, agent_login
):
    # axe is injected as a script tag, which the strict CSP would block.
    context = chromium.new_context(**CONTEXT, bypass_csp=True)
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    found = {"login": serious_accessibility_violations(page)}
    log_in(page, live_server.url, agent_login)
    for name, path in (
        ("search", "/"),
        ("results", "/?q=crd-ev"),
        ("no match", "/?q=crd-nowhere"),
        ("card", f"/cards/{ISSUER}/{CARD}/"),
        ("unrecognized card", f"/cards/{ISSUER}/{CARD}8/"),
        ("missing card", f"/cards/{ISSUER}/crd-nowhere/"),
    ):
        page.goto(live_server.url + path)
        found[name] = serious_accessibility_violations(page)
    context.close()
    assert found == dict.fromkeys(found, [])


def test_search_and_the_card_page_work_without_javascript(
    live_server, chromium, card, agent_login, artifacts
):
    context = chromium.new_context(**CONTEXT, java_script_enabled=False)
    page = context.new_page()
    log_in(page, live_server.url, agent_login, path=f"/cards/{ISSUER}/{CARD}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text(CARD)  # back where it started
    expect(page.locator("#timeline tbody tr")).to_have_count(7)
    page.get_by_role("button", name="日本語").click()
    expect(page.get_by_role("heading", name="タイムライン")).to_be_visible()
    page.screenshot(path=artifacts / "card-ja.png", full_page=True)
    page.get_by_role("link", name="別のカードを探す").click()
    page.locator("#q").fill(KEYS["tracking number"])
    page.get_by_role("button", name="検索").click()
    expect(page).to_have_url(re.compile(f"/cards/{ISSUER}/{CARD}/$"))
    context.close()

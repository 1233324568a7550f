"""The live parts in a real browser: the card page asks D1 (the sandbox) after it has rendered,
polls while the order can change, pauses in hidden tabs, and says so when D1 is unavailable."""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import CONTEXT, log_in, serious_accessibility_violations
from tests.sandbox_fixtures import ISSUER, card
from tracker import live

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CARD = "crd-live-br-0042"
PAGE = f"/cards/{ISSUER}/{CARD}/"


@pytest.fixture
def cached(d1, agent_login):
    """A card that D1 (the sandbox) and Tracker both know, queued for production; it moves on
    only when a test advances it."""
    d1.configure(speed=0.0001)
    d1.seed(card(CARD, stage="CARD_PROD_READY"))
    live.refresh(ISSUER, CARD)
    return CARD


@pytest.fixture
def console_errors(page) -> list[str]:
    """Console errors: the strict CSP reports what it blocks there."""
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    return errors


def status_calls(d1) -> int:
    return d1.counters().get("status.requests", 0)


def set_visibility(page, state: str) -> None:
    """Play a tab going to the background or coming back (headless Chromium is always visible)."""
    page.evaluate(
        """state => {
            const getter = {configurable: true, get: () => state};
            Object.defineProperty(document, "visibilityState", getter);
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def badge(page):
    return page.locator("#card-header .badges .badge").first


def test_an_agent_watches_the_card_move_on_live_and_refreshes_it_by_keyboard(
    live_server, d1, cached, agent_login, page, console_errors, artifacts
):
    log_in(page, live_server.url, agent_login)
    page.locator("#q").fill(CARD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"{PAGE}$"))
    expect(page.locator("#card-header")).to_contain_text("Last checked live in D1")
    expect(page.locator("#live-indicator")).to_be_hidden()  # the check on load is done
    # D1 has moved on since Tracker last heard, and answers slowly: the page shows what
    # Tracker has at once, then the live answer replaces it.
    d1.advance_card(ISSUER, CARD, to="CARD_PROD_ONGOING")
    d1.set_faults(latency_ms=1500)
    page.reload()
    expect(badge(page)).to_have_text("Queued for production")
    expect(page.locator("#live-indicator")).to_be_visible()  # "Asking D1…"
    page.screenshot(path=artifacts / "card-asking-d1.png")
    expect(badge(page)).to_have_text("In production", timeout=5000)
    expect(page.locator("#live-indicator")).to_be_hidden()
    expect(page.locator("#timeline tbody tr")).to_have_count(2)
    expect(page.locator("#timeline tbody tr").first).to_contain_text("CARD_PROD_ONGOING")
    expect(page.locator("#timeline tbody tr").first).to_contain_text("live")
    page.screenshot(path=artifacts / "card-live.png", full_page=True)

    d1.set_faults()
    d1.advance_card(ISSUER, CARD, to="CARD_PROD_DONE")
    button = page.get_by_role("button", name="Refresh from D1")
    button.focus()
    page.keyboard.press("Enter")
    expect(badge(page)).to_have_text("Produced")
    expect(button).to_be_focused()  # the button is outside what the answer replaces
    expect(page.locator("#timeline")).to_have_attribute("hx-trigger", "poll")
    assert console_errors == []


def test_polling_brings_news_pauses_in_a_hidden_tab_and_stops_at_a_terminal_state(
    live_server, d1, cached, agent_login, settings, page, console_errors
):
    settings.TRACKER_CARD_POLL_SECONDS = 1
    log_in(page, live_server.url, agent_login, path=PAGE)
    expect(page.locator("#timeline")).to_have_attribute("data-poll-seconds", "1")

    d1.advance_card(ISSUER, CARD, to="CARD_PROD_ONGOING")
    expect(badge(page)).to_have_text("In production", timeout=5000)  # no click, no reload

    # A hidden tab does not poll; coming back polls at once.
    set_visibility(page, "hidden")
    time.sleep(0.5)  # a poll already on its way may still land
    hidden_calls = status_calls(d1)
    time.sleep(2.5)  # two and a half poll intervals
    assert status_calls(d1) == hidden_calls
    d1.advance_card(ISSUER, CARD, to="CARD_SHIPPED")
    set_visibility(page, "visible")
    expect(badge(page)).to_have_text("Shipped", timeout=3000)

    # Shipped is terminal: the answer came without a trigger, and nothing asks D1 any more.
    timeline = page.locator("#timeline")
    expect(timeline).not_to_have_attribute("hx-trigger", re.compile(".*"))
    expect(timeline).not_to_have_attribute("data-poll-seconds", re.compile(".*"))
    stopped_calls = status_calls(d1)
    time.sleep(2.5)
    assert status_calls(d1) == stopped_calls
    assert console_errors == []


def test_while_d1_is_down_the_cached_page_stays_with_a_banner_and_no_endless_spinner(
    live_server, d1, cached, agent_login, settings, page, console_errors, artifacts
):
    settings.D1_INTERACTIVE_BUDGET = 1.5
    settings.D1_INTERACTIVE_READ_TIMEOUT = 0.6
    log_in(page, live_server.url, agent_login, path=PAGE)
    expect(page.locator("#card-header")).to_contain_text("Last checked live in D1")
    expect(page.locator("#live-indicator")).to_be_hidden()  # the load-time check is done

    d1.set_faults(rates={"hang": 1.0}, hang_seconds=3)
    page.get_by_role("button", name="Refresh from D1").click()
    expect(page.locator("#live-indicator")).to_be_visible()
    banner = page.locator("#card-banner")
    expect(banner).to_contain_text("D1 unavailable, showing status as of", timeout=4000)
    expect(banner).to_contain_text("Tracker stops waiting after 1.5 s.")
    expect(page.locator("#live-indicator")).to_be_hidden()
    expect(badge(page)).to_have_text("Queued for production")  # the cached state stays

    d1.set_faults(rates={"503": 1.0})  # down hard now: answered at once, but 503
    with page.expect_response(re.compile("/live/$")):
        page.get_by_role("button", name="Refresh from D1").click()
    expect(banner).to_contain_text("D1 unavailable, showing status as of")
    expect(page.locator("#live-indicator")).to_be_hidden()
    page.screenshot(path=artifacts / "card-d1-unavailable.png", full_page=True)

    d1.set_faults()  # D1 is back: the banner goes
    page.get_by_role("button", name="Refresh from D1").click()
    expect(banner).not_to_contain_text("D1 unavailable")
    assert console_errors == []


def test_an_agent_looks_up_a_card_tracker_has_not_heard_of(
    live_server, d1, agent_login, page, console_errors, artifacts
):
    d1.seed(card("crd-new-br-0007", stage="CARD_PROD_ONGOING"))
    log_in(page, live_server.url, agent_login)

    page.locator("#q").fill("crd-nobody-br-1")
    page.keyboard.press("Enter")
    expect(page.get_by_text("No card in Tracker matches “crd-nobody-br-1”.")).to_be_visible()
    page.screenshot(path=artifacts / "search-lookup.png", full_page=True)
    page.get_by_role("button", name="Look up in D1").click()
    expect(page.locator("#d1-lookup")).to_contain_text("D1 does not know this card.")
    expect(page.get_by_role("button", name="Look up in D1")).to_be_focused()
    page.screenshot(path=artifacts / "search-lookup-not-found.png", full_page=True)

    page.locator("#q").fill("crd-new-br-0007")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Look up in D1").click()
    expect(page).to_have_url(re.compile(f"/cards/{ISSUER}/crd-new-br-0007/$"))
    expect(badge(page)).to_have_text("In production")
    assert console_errors == []


def test_without_javascript_lookup_and_refresh_still_work(live_server, chromium, d1, agent_login):
    d1.seed(card("crd-new-br-0008", stage="DATA_PREPARED"))
    context = chromium.new_context(**CONTEXT, java_script_enabled=False)
    page = context.new_page()
    log_in(page, live_server.url, agent_login, path="/?q=crd-new-br-0008")
    page.get_by_role("button", name="Look up in D1").click()
    expect(page).to_have_url(re.compile(f"/cards/{ISSUER}/crd-new-br-0008/$"))
    expect(badge(page)).to_have_text("Data prepared")

    d1.advance_card(ISSUER, "crd-new-br-0008", to="CARD_PROD_READY")
    page.get_by_role("button", name="Refresh from D1").click()
    expect(page).to_have_url(re.compile(f"/cards/{ISSUER}/crd-new-br-0008/$"))
    expect(badge(page)).to_have_text("Queued for production")
    context.close()


def test_live_states_have_no_serious_accessibility_violations(
    live_server, chromium, d1, cached, agent_login, artifacts
):
    # axe is injected as a script tag, which the strict CSP would block.
    context = chromium.new_context(**CONTEXT, bypass_csp=True)
    page = context.new_page()
    log_in(page, live_server.url, agent_login, path="/?q=crd-nobody-br-2")
    found = {"lookup offered": serious_accessibility_violations(page)}
    page.get_by_role("button", name="Look up in D1").click()
    expect(page.locator("#d1-lookup")).to_contain_text("D1 does not know this card.")
    found["lookup not found"] = serious_accessibility_violations(page)

    page.goto(live_server.url + PAGE)
    expect(page.locator("#live-indicator")).to_be_hidden()
    found["card, live"] = serious_accessibility_violations(page)
    d1.set_faults(rates={"503": 1.0})
    with page.expect_response(re.compile("/live/$")):
        page.get_by_role("button", name="Refresh from D1").click()
    expect(page.locator("#card-banner")).to_contain_text("D1 unavailable")
    expect(page.locator("#live-indicator")).to_be_hidden()
    found["card, D1 unavailable"] = serious_accessibility_violations(page)
    page.screenshot(path=artifacts / "card-banner-axe.png", full_page=True)
    context.close()
    assert found == dict.fromkeys(found, [])

"""The live parts of the staff pages: the card page's refresh and polling, and the search's
"Look up in D1", against the sandbox over real HTTP."""

import re
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects

from tests.sandbox_fixtures import ISSUER, card
from tracker import live
from tracker.models import CardOrder, LookupAudit, Source, TimelineEvent

pytestmark = pytest.mark.django_db

CARD = "crd-live-page-1"
PAGE = reverse("tracker:card_detail", args=[ISSUER, CARD])
LIVE = reverse("tracker:card_live", args=[ISSUER, CARD])
LOOKUP = reverse("tracker:d1_lookup")
SEARCH = reverse("tracker:search")
HX = {"HX-Request": "true"}
OTHER_ISSUER = "ISSB7Q0002"


def cached(d1, stage: str = "CARD_PROD_READY", card_id: str = CARD) -> CardOrder:
    """A card D1 knows at `stage` and Tracker has cached (through the ingest, as a live read)."""
    d1.seed(card(card_id, stage=stage))
    live.refresh(ISSUER, card_id)
    return CardOrder.objects.get(issuer_id=ISSUER, card_id=card_id)


def status_calls(d1) -> int:
    return d1.counters().get("status.requests", 0)


def audits() -> list[tuple[str, str, str]]:
    return list(LookupAudit.objects.order_by("id").values_list("card_id", "action", "outcome"))


def timeline_tag(html: str) -> str:
    """The opening tag of the timeline section, where the live trigger lives."""
    return re.search(r'<section id="timeline"[^>]*>', html).group(0)


# --- The card page: renders from the database, then asks D1 -------------------------------------


def test_the_page_renders_without_asking_d1_and_asks_on_load_and_every_30_s(agent_client, d1):
    cached(d1)
    calls = status_calls(d1)

    response = agent_client.get(PAGE)

    assert status_calls(d1) == calls  # the page's own time never waits for D1
    tag = timeline_tag(response.content.decode())
    assert f'hx-post="{LIVE}"' in tag
    assert 'hx-trigger="load, poll"' in tag
    assert 'data-poll-seconds="30"' in tag
    assertContains(response, 'src="/static/tracker/live.js"')
    assertContains(response, f'<form class="live-refresh" method="post" action="{LIVE}"')
    assertContains(response, 'name="csrfmiddlewaretoken"')  # the button works without JavaScript
    assertContains(response, "Refresh from D1</button>")
    assertContains(response, 'id="live-indicator" class="htmx-indicator live-indicator"')


def test_the_poll_interval_comes_from_the_setting(agent_client, d1, settings):
    settings.TRACKER_CARD_POLL_SECONDS = 5
    cached(d1)
    assert 'data-poll-seconds="5"' in timeline_tag(agent_client.get(PAGE).content.decode())


def test_a_terminal_order_is_asked_once_on_load_and_never_polled(agent_client, d1):
    cached(d1, stage="CARD_SHIPPED")
    tag = timeline_tag(agent_client.get(PAGE).content.decode())
    assert 'hx-trigger="load"' in tag
    assert "data-poll-seconds" not in tag


def test_an_htmx_fragment_of_the_page_does_not_ask_d1_on_load(agent_client, d1):
    cached(d1)
    html = agent_client.get(PAGE, headers=HX).content.decode()
    assert 'hx-trigger="poll"' in timeline_tag(html)  # swapping it in must not start a loop


def test_a_live_update_swaps_in_the_new_header_and_timeline(agent_client, d1):
    cached(d1, stage="CARD_PROD_READY")
    d1.advance_card(ISSUER, CARD, to="CARD_PROD_DONE")

    response = agent_client.post(LIVE, headers=HX)

    assert response.status_code == 200
    html = response.content.decode()
    # The timeline replaces the one that asked; header and banner come out of band.
    assert html.lstrip().startswith('<section id="timeline"')
    assert "<html" not in html
    assert 'aria-labelledby="card-title" hx-swap-oob="true">' in html
    assert (
        '<div id="card-banner" class="card-banner" role="status" hx-swap-oob="innerHTML">' in html
    )
    assert '<span class="badge badge--progress">Produced</span>' in html
    assert "<code>CARD_PROD_DONE</code>" in html and "<code>CARD_PROD_READY</code>" in html
    tag = timeline_tag(html)
    assert 'hx-trigger="poll"' in tag and 'data-poll-seconds="30"' in tag  # still polling
    assert "D1 unavailable" not in html
    order = CardOrder.objects.get(card_id=CARD)
    assert order.stage == "CARD_PROD_DONE"
    assert order.events.latest("id").source == Source.ON_DEMAND
    assert audits() == [(CARD, "refresh", "changed")]


def test_a_live_check_with_nothing_new_keeps_polling_and_is_audited_unchanged(agent_client, d1):
    order = cached(d1, stage="CARD_PROD_ONGOING")
    d1.configure(speed=0.0001)  # the card does not move on by itself during the test

    response = agent_client.post(LIVE, headers=HX)

    assertContains(response, '<span class="badge badge--progress">In production</span>')
    assert 'hx-trigger="poll"' in timeline_tag(response.content.decode())
    assert order.events.count() == 1
    assert CardOrder.objects.get(pk=order.pk).last_checked_at > order.last_checked_at
    assert audits() == [(CARD, "refresh", "unchanged")]


def test_a_terminal_answer_comes_back_without_a_polling_trigger(agent_client, d1):
    cached(d1, stage="CARD_PROD_DONE")
    d1.advance_card(ISSUER, CARD, to="CARD_SHIPPED")

    html = agent_client.post(LIVE, headers=HX).content.decode()

    tag = timeline_tag(html)
    assert "hx-trigger" not in tag and "hx-post" not in tag and "data-poll-seconds" not in tag
    assert '<span class="badge badge--done">Shipped</span>' in html


def test_a_card_d1_does_not_know_gets_a_banner_and_no_more_polling(agent_client, d1):
    CardOrder.objects.create(issuer_id=ISSUER, card_id=CARD, stage="CARD_PROD_READY")

    response = agent_client.post(LIVE, headers=HX)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<strong>D1 does not know this card.</strong>" in html
    assert "hx-trigger" not in timeline_tag(html)
    assert CardOrder.objects.get(card_id=CARD).unknown_to_d1 is True
    assert audits() == [(CARD, "refresh", "d1_not_found")]


def assert_unavailable_banner(response, order: CardOrder, why: str) -> None:
    assert response.status_code == 200
    as_of = timezone.localtime(order.known_as_of()).isoformat(timespec="seconds")
    assertContains(
        response, f'<strong>D1 unavailable, showing status as of <time datetime="{as_of}"'
    )
    assertContains(response, why)
    # The cached state stays on the page.
    assertContains(response, '<span class="badge badge--progress">Queued for production</span>')


def test_when_d1_answers_503_the_cached_page_stays_with_a_banner(agent_client, d1, settings):
    order = cached(d1)
    d1.set_faults(rates={"503": 1.0})

    response = agent_client.post(LIVE, headers=HX)

    assert_unavailable_banner(response, order, "Tracker stops waiting after 4 s.")
    assertContains(response, "Tracker asks again every 30 seconds while this page is open.")
    assert 'hx-trigger="poll"' in timeline_tag(response.content.decode())  # tries again later
    ((card_id, action, outcome, detail),) = LookupAudit.objects.values_list(
        "card_id", "action", "outcome", "detail"
    )
    assert (card_id, action, outcome) == (CARD, "refresh", "d1_unavailable")
    assert "503" in detail


def test_when_d1_hangs_the_answer_comes_within_the_budget(agent_client, d1, settings):
    settings.D1_INTERACTIVE_BUDGET = 1.0
    settings.D1_INTERACTIVE_READ_TIMEOUT = 0.4
    order = cached(d1)
    d1.set_faults(rates={"hang": 1.0}, hang_seconds=3)
    started = time.monotonic()

    response = agent_client.post(LIVE, headers=HX)

    assert time.monotonic() - started < 1.0 + 0.5
    assert_unavailable_banner(response, order, "Tracker stops waiting after 1 s.")
    assert audits()[-1] == (CARD, "refresh", "d1_unavailable")


@pytest.mark.cache
def test_when_the_breaker_is_open_d1_is_not_asked_and_the_banner_says_why(
    agent_client, d1, settings
):
    settings.D1_BREAKER_THRESHOLD = 1
    settings.D1_INTERACTIVE_RETRIES = 0
    order = cached(d1)
    d1.set_faults(rates={"503": 1.0})
    agent_client.post(LIVE, headers=HX)  # this failure opens the breaker
    calls = status_calls(d1)

    response = agent_client.post(LIVE, headers=HX)

    assert status_calls(d1) == calls
    assert_unavailable_banner(
        response, order, "D1 failed several times in a row, so Tracker pauses asking it for 30 s."
    )
    assert audits()[-1] == (CARD, "refresh", "d1_unavailable")
    assert "breaker open" in LookupAudit.objects.latest("id").detail


@pytest.mark.parametrize("fault", ["malformed", "403"])
def test_an_unusable_answer_from_d1_shows_the_banner(agent_client, d1, fault):
    order = cached(d1)
    d1.set_faults(next=[fault])

    response = agent_client.post(LIVE, headers=HX)

    assert_unavailable_banner(response, order, "D1 answered with something Tracker cannot use.")
    audit = LookupAudit.objects.get()
    assert audit.outcome == "d1_unavailable"
    assert audit.detail.startswith("D1BadResponse" if fault == "malformed" else "D1Rejected")


def test_an_answer_about_another_card_is_refused_and_nothing_is_written(agent_client, d1):
    order = cached(d1)
    other = d1.card(ISSUER, CARD)["current"] | {"cardId": "crd-someone-else"}
    d1.seed(card(CARD, operations=[other]))

    response = agent_client.post(LIVE, headers=HX)

    assert_unavailable_banner(response, order, "D1 answered with something Tracker cannot use.")
    assert not CardOrder.objects.filter(card_id="crd-someone-else").exists()


def test_without_javascript_the_button_refreshes_and_comes_back_to_the_page(agent_client, d1):
    cached(d1)
    d1.advance_card(ISSUER, CARD, to="CARD_PROD_ONGOING")

    response = agent_client.post(LIVE)

    assertRedirects(response, PAGE)
    assert CardOrder.objects.get(card_id=CARD).stage == "CARD_PROD_ONGOING"


def test_without_javascript_d1_unavailable_shows_the_page_with_its_banner(agent_client, d1):
    order = cached(d1)
    d1.set_faults(rates={"503": 1.0})

    response = agent_client.post(LIVE)

    assert_unavailable_banner(response, order, "Tracker stops waiting after 4 s.")
    assertContains(response, '<div class="topbar-end">')  # the whole page, not a fragment


def test_a_card_neither_tracker_nor_d1_knows_sends_the_browser_to_its_page(agent_client, d1):
    response = agent_client.post(LIVE, headers=HX)
    assert response["HX-Redirect"] == PAGE
    assertRedirects(agent_client.post(LIVE), PAGE, target_status_code=404)


def test_the_live_endpoint_takes_only_post(agent_client, d1):
    assert agent_client.get(LIVE).status_code == 405


def test_refresh_needs_the_refresh_live_permission(client, d1):
    cached(d1)
    viewer = User.objects.create_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_cardorder"))
    client.force_login(viewer)
    calls = status_calls(d1)

    page = client.get(PAGE)
    response = client.post(LIVE, headers=HX)

    assertNotContains(page, "Refresh from D1")
    assertNotContains(page, "hx-post")
    assertNotContains(page, "live.js")
    assertContains(response, "You are not allowed to see this page", status_code=403)
    assert status_calls(d1) == calls
    assert audits()[-1] == (CARD, "refresh", "denied")


def test_refresh_is_refused_to_anonymous_users(client, d1):
    response = client.post(LIVE)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert status_calls(d1) == 0


def test_a_poll_after_the_session_ended_reloads_the_page_instead_of_swapping_in_the_login(
    client, d1
):
    # Following the redirect, the browser would hand htmx the login form to put in the timeline.
    response = client.post(LIVE, headers=HX)
    assert (response.status_code, response["HX-Refresh"], response.content) == (200, "true", b"")
    assert client.get(SEARCH, {"q": "crd-1"}, headers=HX)["HX-Refresh"] == "true"


def test_the_live_post_needs_the_csrf_token_that_the_page_gives_htmx(agent, d1):
    cached(d1)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(agent)

    assert browser.post(LIVE, headers=HX).status_code == 403
    page = browser.get(PAGE).content.decode()
    token = re.search(r'hx-headers=\'\{"x-csrftoken": "([^"]+)"\}\'', page).group(1)
    assert browser.post(LIVE, headers={**HX, "X-CSRFToken": token}).status_code == 200
    assert audits()[-1] == (CARD, "refresh", "unchanged")


# Session, user, the permissions (shared cache); the user's live budget (one UPDATE); the breaker
# and the token from the database cache; the ingest (inside the test's transaction, no savepoint):
# lock the order (one upsert that locks in the one global order), read it, its known events, insert
# the event, write the order back with the check time; the audit INSERT; then the page: the order
# and its events. Whatever the timeline's length.
LIVE_QUERIES = 14


def test_a_live_refresh_costs_the_same_for_one_event_or_two_hundred(
    agent_client, d1, django_assert_num_queries
):
    order = cached(d1, stage="CARD_PROD_REQUESTED")
    agent_client.post(LIVE, headers=HX)  # the token is fetched once and cached
    d1.advance_card(ISSUER, CARD, steps=1)
    with django_assert_num_queries(LIVE_QUERIES):
        agent_client.post(LIVE, headers=HX)
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            order=order,
            content_hash=f"h{n}",
            source=Source.NOTIFICATION,
            verdict="stale",
            status="CARD_PROD_REQUESTED",
        )
        for n in range(200)
    )
    d1.advance_card(ISSUER, CARD, steps=1)
    with django_assert_num_queries(LIVE_QUERIES):
        response = agent_client.post(LIVE, headers=HX)
    assertContains(response, "<code>CARD_PROD_READY</code>")


# --- Search miss: "Look up in D1" ---------------------------------------------------------------


def test_a_miss_shaped_like_a_card_id_offers_a_look_up_in_d1_form(agent_client):
    response = agent_client.get(SEARCH, {"q": "crd-new-1"})
    assertContains(response, f'<form class="lookup-form" method="post" action="{LOOKUP}"')
    assertContains(response, '<input type="hidden" name="card_id" value="crd-new-1">')
    assertContains(response, f'<input type="hidden" name="issuer_id" value="{ISSUER}">')
    assertContains(response, "Look up in D1</button>")
    assertNotContains(response, "<select")


def test_with_several_issuers_the_agent_picks_one(agent_client, d1, settings):
    settings.D1_ISSUER_IDS = [ISSUER, OTHER_ISSUER]
    response = agent_client.get(SEARCH, {"q": "crd-new-1"})
    assertContains(response, '<label for="lookup-issuer">Issuer</label>')
    assertContains(response, f'<option value="{OTHER_ISSUER}">{OTHER_ISSUER}</option>')
    d1.seed({"issuerId": OTHER_ISSUER, "cardId": "crd-new-1", "stage": "DATA_PREPARED"})

    response = agent_client.post(LOOKUP, {"card_id": "crd-new-1", "issuer_id": OTHER_ISSUER})

    assertRedirects(response, reverse("tracker:card_detail", args=[OTHER_ISSUER, "crd-new-1"]))
    assert not CardOrder.objects.filter(issuer_id=ISSUER).exists()


def test_a_card_d1_knows_is_cached_and_opened(agent_client, d1):
    d1.seed(card("crd-new-1", stage="CARD_PROD_ONGOING", issuerRequestId="ord-new-1"))

    response = agent_client.post(LOOKUP, {"card_id": "crd-new-1", "issuer_id": ISSUER})

    url = reverse("tracker:card_detail", args=[ISSUER, "crd-new-1"])
    assertRedirects(response, url, fetch_redirect_response=False)
    order = CardOrder.objects.get(card_id="crd-new-1")
    assert (order.stage, order.issuer_request_id) == ("CARD_PROD_ONGOING", "ord-new-1")
    assert order.events.get().source == Source.ON_DEMAND
    assert audits() == [("crd-new-1", "lookup", "changed")]
    assertContains(agent_client.get(SEARCH, {"q": "ord-new-1"}, follow=True), "crd-new-1")


def test_an_htmx_lookup_that_finds_the_card_redirects_the_browser(agent_client, d1):
    d1.seed(card("crd-new-2", stage="DATA_PREPARED"))
    response = agent_client.post(LOOKUP, {"card_id": "crd-new-2", "issuer_id": ISSUER}, headers=HX)
    assert response["HX-Redirect"] == reverse("tracker:card_detail", args=[ISSUER, "crd-new-2"])


def test_a_card_d1_does_not_know_says_so_and_keeps_the_search(agent_client, d1):
    response = agent_client.post(LOOKUP, {"card_id": "crd-nobody-1", "issuer_id": ISSUER})

    assert response.status_code == 200
    assertContains(response, "<strong>D1 does not know this card.</strong>")
    assertContains(response, f"D1 answered that issuer {ISSUER} has no card “crd-nobody-1”.")
    assertContains(response, 'id="q" name="q" type="search" value="crd-nobody-1"')
    assertContains(response, "No card in Tracker matches “crd-nobody-1”.")
    assert not CardOrder.objects.exists()
    assert audits() == [("crd-nobody-1", "lookup", "d1_not_found")]


def test_an_htmx_lookup_miss_replaces_only_the_lookup_panel(agent_client, d1):
    response = agent_client.post(
        LOOKUP, {"card_id": "crd-nobody-2", "issuer_id": ISSUER}, headers=HX
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="d1-lookup"')
    assert "<strong>D1 does not know this card.</strong>" in html
    assert "Look up in D1</button>" in html  # the agent can try again (after fixing the ID)


@pytest.mark.parametrize(
    ("faults", "why"),
    [
        ({"rates": {"503": 1.0}}, "D1 did not answer in time or reported a failure."),
        ({"next": ["malformed"]}, "D1 answered with something Tracker cannot use."),
    ],
)
def test_when_d1_is_unavailable_a_lookup_says_so_and_keeps_the_search(
    agent_client, d1, faults, why
):
    d1.seed(card("crd-new-3", stage="DATA_PREPARED"))
    d1.set_faults(**faults)

    response = agent_client.post(LOOKUP, {"card_id": "crd-new-3", "issuer_id": ISSUER})

    assertContains(response, "<strong>D1 unavailable.</strong>")
    assertContains(response, why)
    assertContains(response, 'id="q" name="q" type="search" value="crd-new-3"')
    assert not CardOrder.objects.exists()
    assert audits() == [("crd-new-3", "lookup", "d1_unavailable")]


@pytest.mark.parametrize(
    "data",
    [
        {"card_id": "not a card", "issuer_id": ISSUER},
        {"card_id": "x" * 49, "issuer_id": ISSUER},
        {"issuer_id": ISSUER},
    ],
)
def test_a_lookup_of_something_that_cannot_be_asked_is_refused(agent_client, d1, data):
    assert agent_client.post(LOOKUP, data).status_code == 400
    assert status_calls(d1) == 0
    assert not LookupAudit.objects.exists()


def test_lookup_needs_the_refresh_live_permission(client, d1):
    viewer = User.objects.create_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_cardorder"))
    client.force_login(viewer)

    search = client.get(SEARCH, {"q": "crd-new-4"})
    response = client.post(LOOKUP, {"card_id": "crd-new-4", "issuer_id": ISSUER})

    assertContains(search, "Looking a card up in D1 needs the live refresh permission.")
    assertNotContains(search, "Look up in D1</button>")
    assert response.status_code == 403
    assert status_calls(d1) == 0
    assert audits() == [("crd-new-4", "lookup", "denied")]


def test_the_lookup_post_needs_a_csrf_token(agent, d1):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(agent)
    response = browser.post(LOOKUP, {"card_id": "crd-new-5", "issuer_id": ISSUER})
    assert response.status_code == 403
    assert status_calls(d1) == 0

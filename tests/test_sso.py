"""Single sign-on with OpenID Connect against a small provider run by the test (real HTTP, an
RS256-signed id_token checked against the provider's JWKS)."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.oidc_provider import Provider
from tracker import roles

pytestmark = pytest.mark.django_db

GROUP_MAP = {
    "tracker-agents": roles.AGENTS,
    "tracker-supervisors": roles.SUPERVISORS,
    "tracker-admins": roles.ADMINISTRATORS,
}
BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "tracker.permission_cache.CachedPermissionsBackend",
    "tracker.sso.TrackerOIDCBackend",
]


@pytest.fixture
def idp(settings) -> Iterator[Provider]:
    provider = Provider(client_id="tracker-test", client_secret="idp-secret")
    provider.start()
    settings.OIDC_RP_CLIENT_ID = provider.client_id
    settings.OIDC_RP_CLIENT_SECRET = provider.client_secret
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{provider.url}/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{provider.url}/token"
    settings.OIDC_OP_USER_ENDPOINT = f"{provider.url}/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{provider.url}/jwks"
    settings.OIDC_OP_ISSUER = provider.url
    settings.OIDC_RP_SCOPES = "openid profile groups"
    settings.TRACKER_OIDC_GROUP_MAP = GROUP_MAP
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    yield provider
    provider.stop()


def sign_in(client: Client, provider: Provider, next_url: str = "/", **claims):
    """The browser's part: Tracker -> the provider -> Tracker's callback."""
    provider.claims = {"sub": "sub-1", "preferred_username": "ann", **claims}
    start = client.get("/accounts/sso/", {"next": next_url})
    assert start.status_code == 302 and start.url.startswith(provider.url + "/authorize?")
    at_provider = httpx.get(start.url, follow_redirects=False)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["Location"])
    assert back.path == "/accounts/sso/callback/"
    return client.get(f"{back.path}?{back.query}")


def _signed_in(client: Client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def test_a_new_agent_signs_in_with_the_provider_and_gets_the_agent_role(client, idp):
    response = sign_in(client, idp, "/?q=crd-1", groups=["tracker-agents", "unrelated"])
    assert response.status_code == 302 and response.url == "/?q=crd-1"
    user = _signed_in(client)
    assert user.username == "ann"
    assert [group.name for group in user.groups.all()] == [roles.AGENTS]
    assert not user.is_staff and not user.has_usable_password()
    assert client.get("/").status_code == 200
    assert client.get("/stuck/").status_code == 403
    assert idp.log == ["GET /authorize", "POST /token", "GET /jwks", "GET /userinfo"]


def test_the_role_follows_the_provider_at_every_sign_in(client, idp):
    sign_in(client, idp, groups=["tracker-agents"])
    client.logout()
    sign_in(client, idp, groups=["tracker-supervisors"])
    user = _signed_in(client)
    assert [group.name for group in user.groups.all()] == [roles.SUPERVISORS]
    assert user.is_staff
    assert client.get("/stuck/").status_code == 200


def test_someone_the_map_gives_no_role_is_refused(client, idp):
    response = sign_in(client, idp, groups=["everyone"])
    assert response.status_code == 302 and response.url == "/accounts/login/?sso=failed"
    assert _signed_in(client) is None
    assert not User.objects.filter(username="ann").exists()
    page = client.get(response.url)
    assert b"Single sign-on did not sign you in" in page.content


def test_a_superuser_account_is_never_signed_in_by_the_provider(client, idp):
    User.objects.create_superuser("ann", password="root-pw-1")
    response = sign_in(client, idp, groups=["tracker-admins"])
    assert response.url == "/accounts/login/?sso=failed"
    assert _signed_in(client) is None


def test_an_id_token_meant_for_another_client_is_refused(client, idp):
    idp.audience = "another-client"
    response = sign_in(client, idp, groups=["tracker-agents"])
    assert response.url == "/accounts/login/?sso=failed"
    assert _signed_in(client) is None


def test_a_code_cannot_be_used_twice(client, idp):
    idp.claims = {"sub": "sub-1", "preferred_username": "ann", "groups": ["tracker-agents"]}
    start = client.get("/accounts/sso/")
    back = urlsplit(httpx.get(start.url, follow_redirects=False).headers["Location"])
    assert _signed_in(client) is None
    client.get(f"{back.path}?{back.query}")
    assert _signed_in(client) is not None
    other = Client()
    replay = other.get(f"{back.path}?{back.query}")
    assert replay.status_code == 302 and _signed_in(other) is None


def test_the_login_page_offers_single_sign_on(client, idp):
    page = client.get("/accounts/login/")
    assert b"Sign in with single sign-on" in page.content
    assert b'href="/accounts/sso/' in page.content


def test_with_passwords_off_only_a_superuser_signs_in_with_one(client, idp, settings):
    settings.TRACKER_PASSWORD_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "tracker.login.PermissionsOnlyBackend",
        "tracker.sso.TrackerOIDCBackend",
    ]
    agent = User.objects.create_user("al", password="al-password-1")
    agent.groups.add(Group.objects.get(name=roles.AGENTS))
    User.objects.create_superuser("root", password="root-pw-1")
    refused = client.post("/accounts/login/", {"username": "al", "password": "al-password-1"})
    assert refused.status_code == 200 and _signed_in(client) is None
    assert b"Password sign-in is for superusers only." in refused.content
    root = client.post("/accounts/login/", {"username": "root", "password": "root-pw-1"})
    assert root.status_code == 302 and _signed_in(client).username == "root"
    client.logout()
    # The provider still signs the agent in, and their permissions still apply.
    sign_in(client, idp, preferred_username="al", groups=["tracker-agents"])
    assert _signed_in(client).username == "al"
    assert client.get("/").status_code == 200

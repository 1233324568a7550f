"""Single sign-on with OpenID Connect (mozilla-django-oidc), on when OIDC_RP_CLIENT_ID is set.

People are matched by username (TRACKER_OIDC_USERNAME_CLAIM) and created on their first
sign-in. Their role comes from the identity provider at every sign-in: the values of the
TRACKER_OIDC_GROUPS_CLAIM claim are mapped to Tracker's groups by TRACKER_OIDC_GROUP_MAP, and
the user's role groups are set to exactly those (taken away in the provider, taken away here).
Someone the map gives no role is refused. Superuser accounts are never signed in this way, and
no right beyond the three roles ever comes from the provider.
"""

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from tracker import pan, roles

logger = logging.getLogger(__name__)

_ROLES = (roles.AGENTS, roles.SUPERVISORS, roles.ADMINISTRATORS)


def enabled() -> bool:
    return bool(settings.OIDC_RP_CLIENT_ID)


def mapped_roles(claims: dict[str, Any]) -> set[str]:
    """Tracker's groups for these claims, through TRACKER_OIDC_GROUP_MAP."""
    values = claims.get(settings.TRACKER_OIDC_GROUPS_CLAIM) or []
    if isinstance(values, str):
        values = [values]
    mapping = settings.TRACKER_OIDC_GROUP_MAP
    return {mapping[value] for value in values if isinstance(value, str) and value in mapping}


class TrackerOIDCBackend(OIDCAuthenticationBackend):
    """Signs people in with the identity provider; permissions come from their groups through
    tracker.permission_cache.CachedPermissionsBackend, as for everyone."""

    def verify_token(self, token: str, **kwargs) -> dict | None:
        # A token that fails a check ends as a refused sign-in (the login page says so), not as
        # a 400 page.
        try:
            return super().verify_token(token, **kwargs)
        except SuspiciousOperation as e:
            logger.warning("SSO sign-in refused: %s", e)
            return None

    def _verify_jws(self, payload, key) -> dict:
        claims = super()._verify_jws(payload, key)
        # The library checks the signature and the nonce; the token must also be meant for us.
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if settings.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("the id_token is not for this client (aud)")
        if settings.OIDC_OP_ISSUER and claims.get("iss") != settings.OIDC_OP_ISSUER:
            raise SuspiciousOperation("the id_token comes from another issuer (iss)")
        return claims

    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict:
        # The groups may be in the id_token, the userinfo answer, or both.
        claims = dict(payload)
        if settings.OIDC_OP_USER_ENDPOINT:
            claims.update(super().get_userinfo(access_token, id_token, payload))
        return claims

    def _username(self, claims: dict[str, Any]) -> str:
        username = claims.get(settings.TRACKER_OIDC_USERNAME_CLAIM)
        if not isinstance(username, str) or not username.strip():
            return ""
        return pan.mask_pans(username.strip())[:150]

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if not self._username(claims):
            logger.warning("SSO sign-in refused: no %s claim", settings.TRACKER_OIDC_USERNAME_CLAIM)
            return False
        if not mapped_roles(claims):
            logger.warning(
                "SSO sign-in of %s refused: no role in its %s claim",
                self._username(claims),
                settings.TRACKER_OIDC_GROUPS_CLAIM,
            )
            return False
        return True

    def filter_users_by_claims(self, claims: dict[str, Any]):
        return User.objects.filter(username=self._username(claims))

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"username {self._username(claims)}"

    def create_user(self, claims: dict[str, Any]) -> User:
        with transaction.atomic():
            user = User.objects.create_user(self._username(claims))  # an unusable password
            return self.update_user(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if user.is_superuser:
            raise SuspiciousOperation("superusers sign in with their password, never by SSO")
        if not user.is_active:
            raise SuspiciousOperation("the account is deactivated")
        wanted = mapped_roles(claims)
        with transaction.atomic():
            kept = user.groups.exclude(name__in=_ROLES)
            user.groups.set([*kept, *Group.objects.filter(name__in=wanted)])
            user.email = pan.mask_pans(str(claims.get("email") or ""))[:254]
            # The admin site is for supervisors and administrators (CONTRACT §4).
            user.is_staff = bool(wanted - {roles.AGENTS})
            user.save(update_fields=["email", "is_staff"])
        return user

    def get_all_permissions(self, user_obj, obj=None) -> set[str]:
        return set()  # CachedPermissionsBackend answers

    def get_user_permissions(self, user_obj, obj=None) -> set[str]:
        return set()

    def get_group_permissions(self, user_obj, obj=None) -> set[str]:
        return set()

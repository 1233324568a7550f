"""The sandbox's token endpoint checks: an ES256 JWT assertion as D1 wants it (REFERENCE §9).

D1 stores only the issuer's public key, selected by the assertion's `kid`. A wrong key, an
unknown kid, an expired assertion or one that claims to live longer than 15 minutes is refused
with D1's `{errorCode, error}` body: 400 for a request that is malformed, 401 for credentials
that do not hold.
"""

import re
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_MAX_LIFETIME = 15 * 60
_LEEWAY = 5  # seconds of clock skew forgiven
_ISSUER = re.compile(r"[A-Za-z0-9]{10}")


class Refused(Exception):
    """The token request fails; status, errorCode and error are what D1 would answer."""

    def __init__(self, status: int, error_code: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error_code = error_code
        self.error = error


def public_key(pem: str | bytes) -> ec.EllipticCurvePublicKey:
    """Load an EC P-256 public key, or raise ValueError."""
    key = load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an EC P-256 public key")
    return key


def verify(params: dict[str, Any], keys: dict[str, ec.EllipticCurvePublicKey]) -> str:
    """Check a token request's grant and assertion; return the issuerId it authenticates."""
    if params.get("grant_type") != JWT_BEARER:
        raise Refused(400, "FIELD_INVALID_VALUE", f"grant_type must be {JWT_BEARER}")
    assertion = params.get("assertion")
    if not isinstance(assertion, str) or not assertion:
        raise Refused(400, "FIELD_INVALID_FORMAT", "assertion is required")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        raise Refused(400, "PARSING_ERROR", "assertion is not a JWT") from None
    if header.get("alg") != "ES256":
        raise Refused(401, "AUTHORIZER_UNAUTHORIZED", "assertion must be signed with ES256")
    key = keys.get(header.get("kid") or "")
    if key is None:
        raise Refused(401, "AUTHORIZER_UNAUTHORIZED", "unknown kid")
    try:
        claims = jwt.decode(
            assertion,
            key,
            algorithms=["ES256"],
            options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            leeway=_LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise Refused(401, "AUTHORIZER_UNAUTHORIZED", "assertion expired") from None
    except jwt.InvalidSignatureError:
        raise Refused(401, "AUTHORIZER_UNAUTHORIZED", "assertion signature invalid") from None
    except jwt.InvalidTokenError as e:
        raise Refused(400, "FIELD_INVALID_VALUE", f"assertion rejected: {e}") from None
    issuer = claims["iss"]
    if claims["sub"] != issuer or not isinstance(issuer, str) or not _ISSUER.fullmatch(issuer):
        raise Refused(401, "AUTHORIZER_UNAUTHORIZED", "iss and sub must both be the issuerId")
    if claims["exp"] > time.time() + _MAX_LIFETIME + _LEEWAY:
        raise Refused(401, "AUTHORIZER_UNAUTHORIZED", "assertion exp is more than 15 minutes ahead")
    return issuer

"""The D1 access token (REFERENCE §9), shared by every process through the Django cache.

D1 issues 15-minute bearer tokens for an ES256 JWT assertion signed with our onboarded key. One
token serves every process (web, worker, commands): it lives in the cache until shortly before it
expires, and a cache lock lets one caller fetch a new one while the others wait for it. The HTTP
exchange itself is tracker.d1.client's job; this module only signs, caches and coordinates.
"""

import hashlib
import math
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.conf import settings
from django.core.cache import cache

from tracker.d1.errors import D1Error, D1Unavailable

_LOCK_POLL_SECONDS = 0.05


def assertion(issuer_id: str) -> str:
    """A signed JWT assertion for the JWT-bearer grant: ES256, `kid` header, iss = sub = issuer."""
    now = int(time.time())
    claims = {
        "iss": issuer_id,
        "sub": issuer_id,
        "iat": now,
        "exp": now + settings.D1_JWT_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    if settings.D1_JWT_AUDIENCE:
        claims["aud"] = settings.D1_JWT_AUDIENCE
    key = _private_key(Path(settings.D1_JWT_PRIVATE_KEY_FILE))
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": settings.D1_JWT_KID})


def get(issuer_id: str, fetch: Callable[[], tuple[str, float]], deadline: float) -> str:
    """The cached token, or a new one from `fetch()` (returning token, expires_in) under a lock.

    Waits for another caller's fetch at most until `deadline` (time.monotonic()).
    """
    key = _cache_key(issuer_id)
    lock = f"{key}:lock"
    while True:
        token = cache.get(key)
        if token:
            return str(token)
        owner = secrets.token_hex(8)
        # The lock expires on its own if its holder dies mid-fetch.
        if cache.add(lock, owner, timeout=max(1, math.ceil(deadline - time.monotonic()) + 1)):
            try:
                token = cache.get(key)
                if token:
                    return str(token)
                token, expires_in = fetch()
                cache.set(key, token, timeout=_reuse_seconds(expires_in))
                return token
            finally:
                if cache.get(lock) == owner:
                    cache.delete(lock)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise D1Unavailable("timed out waiting for another process to fetch the D1 token")
        time.sleep(min(_LOCK_POLL_SECONDS, remaining))


def discard(issuer_id: str, token: str) -> None:
    """Forget a token D1 refused, unless another caller has already replaced it."""
    key = _cache_key(issuer_id)
    if cache.get(key) == token:
        cache.delete(key)


def _cache_key(issuer_id: str) -> str:
    # A token from another D1 environment or for another key is useless here: both are in the key.
    scope = f"{settings.D1_TOKEN_URL}|{settings.D1_JWT_KID}|{issuer_id}"
    return f"tracker:d1:token:{issuer_id}:{hashlib.sha256(scope.encode()).hexdigest()[:16]}"


def _reuse_seconds(expires_in: float) -> float:
    # Refresh ahead of expiry so a token never dies in flight; short-lived tokens get half
    # their life.
    return max(1.0, expires_in - min(settings.D1_TOKEN_REFRESH_MARGIN, expires_in / 2))


def _private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        # Never echo the file's content: it is a secret.
        raise D1Error(f"cannot load the D1 private key from {path}: {type(e).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise D1Error(f"the D1 private key in {path} is not an EC P-256 key (ES256)")
    return key

"""The D1-facing endpoints: D1's notifications, and the OAuth2 token endpoint D1 calls first.

A notification is authenticated (D1_NOTIFY_AUTH), size- and type-checked, parsed (orjson) and
stored verbatim in the inbox in one INSERT, then answered 204: the appliers apply it within a
second (tracker/applier.py). A body answered 204 or 400 is therefore never lost, and anything
transient answers 503 so that D1 delivers again. Nothing here calls D1 or locks a card.

Budget: ≤ 1 ms of Python per single-operation POST, one statement (the INSERT): authentication
costs no query (tokens are signed, not stored) and no model is built.
"""

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from urllib.parse import unquote_plus

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.urls import Resolver404, resolve
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tracker import applier, inbox
from tracker.models import AuthFailureCount

logger = logging.getLogger(__name__)

# Kept with each body for troubleshooting. An allow-list, so that credentials (Authorization,
# the HMAC signature, cookies) can never end up in the inbox.
_SAFE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "User-Agent",
    "X-Correlation-Id",
    "X-Request-Id",
    "X-Forwarded-For",
)
_HEADER_MAX = 256
_FAILURE_BUCKETS_KEPT = timedelta(days=7)
_RETRY_AFTER_SECONDS = "5"


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _unavailable() -> JsonResponse:
    response = _error(503, "temporarily unavailable, deliver again")
    response["Retry-After"] = _RETRY_AFTER_SECONDS
    return response


def _summary(error: Exception) -> str:
    # Driver messages name hosts and locks, not payloads; the first line is enough for a log.
    return f"{error.__class__.__name__}: {next(iter(str(error).splitlines()), '')}"


def _remote(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


# --- Credentials ---------------------------------------------------------------------------


def _signer() -> signing.TimestampSigner:
    return _signer_for(
        settings.SECRET_KEY, settings.D1_NOTIFY_CLIENT_ID, settings.D1_NOTIFY_CLIENT_SECRET
    )


@lru_cache(maxsize=4)
def _signer_for(secret_key: str, client_id: str, client_secret: str) -> signing.TimestampSigner:
    # The salt binds tokens to the client's credentials: changing the secret revokes them all.
    # "." keeps the token within RFC 6750's b64token characters.
    fingerprint = hashlib.sha256(f"{client_id}:{client_secret}".encode()).hexdigest()
    return signing.TimestampSigner(
        key=secret_key, salt=f"tracker.d1-notify-token.{fingerprint}", sep="."
    )


def _client_refusal(request: HttpRequest) -> str:
    """Why the token request's HTTP Basic credentials are not D1's ("" when they are)."""
    expected_secret = settings.D1_NOTIFY_CLIENT_SECRET
    if not expected_secret:
        return "D1_NOTIFY_CLIENT_SECRET is not set"
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return "no HTTP Basic credentials"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "malformed HTTP Basic credentials"
    client_id, _, client_secret = decoded.partition(":")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding. Both are
    # compared whatever the first gives, so the timing tells nothing.
    id_ok = constant_time_compare(unquote_plus(client_id), settings.D1_NOTIFY_CLIENT_ID)
    secret_ok = constant_time_compare(unquote_plus(client_secret), expected_secret)
    return "" if id_ok and secret_ok else "wrong client id or secret"


def _bearer_refusal(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "no bearer token"
    try:
        _signer().unsign_object(token.strip(), max_age=settings.D1_NOTIFY_TOKEN_TTL)
    except signing.SignatureExpired:
        return "expired token"
    except signing.BadSignature:
        return "invalid token"
    return ""


@lru_cache(maxsize=4)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def _from_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    return any(ip in network for network in _networks(tuple(settings.TRUSTED_PROXY_IPS)))


def _proxy_refusal(request: HttpRequest) -> str:
    # Anyone can send the header; only the proxy that terminated TLS can be believed.
    if not _from_trusted_proxy(_remote(request)):
        return "not from a trusted proxy"
    if request.headers.get(settings.D1_NOTIFY_MTLS_VERIFY_HEADER) != "SUCCESS":
        return "client certificate not verified by the proxy"
    subject = request.headers.get(settings.D1_NOTIFY_MTLS_SUBJECT_HEADER, "")
    allowed = settings.D1_NOTIFY_MTLS_SUBJECTS
    if allowed and subject not in allowed:
        return f"client certificate subject not allowed: {subject[:_HEADER_MAX]!r}"
    return ""


def _header_refusal(request: HttpRequest) -> str:
    """Why the headers do not authenticate the request ("" when they do, or the body must)."""
    mode = settings.D1_NOTIFY_AUTH
    if mode == "bearer":
        return _bearer_refusal(request)
    if mode == "proxy-mtls":
        return _proxy_refusal(request)
    return ""  # "none", or "hmac", which is checked once the body is read


def _signature_refusal(request: HttpRequest, body: bytes) -> str:
    if settings.D1_NOTIFY_AUTH != "hmac":
        return ""
    sent = request.headers.get(settings.D1_NOTIFY_HMAC_HEADER, "").strip().lower()
    sent = sent.removeprefix("sha256=")
    if not sent:
        return "no signature"
    # With a timestamp header the signature covers "<timestamp>.<body>", so an old body cannot
    # be sent again past the tolerance: a replay needs a fresh timestamp it cannot sign.
    stamp = request.headers.get(settings.D1_NOTIFY_HMAC_TIMESTAMP_HEADER, "").strip()
    signed = body
    if stamp:
        if not stamp.isdigit():
            return "timestamp is not Unix seconds"
        if abs(time.time() - int(stamp)) > settings.D1_NOTIFY_HMAC_TOLERANCE:
            return "stale signature (timestamp outside D1_NOTIFY_HMAC_TOLERANCE)"
        signed = stamp.encode() + b"." + body
    # Every secret is tried (current and next during a rotation), each in constant time.
    matches = [
        constant_time_compare(hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest(), sent)
        for secret in settings.D1_NOTIFY_HMAC_SECRETS
    ]
    return "" if any(matches) else "bad signature"


def _count_failure(issuer_id: str) -> None:
    """Add one to this hour's authentication failures; best effort, never changes the answer."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    bucket = AuthFailureCount.objects.filter(issuer_id=issuer_id, hour=hour)
    try:
        if bucket.update(count=F("count") + 1):
            return
        try:
            with transaction.atomic():
                AuthFailureCount.objects.create(issuer_id=issuer_id, hour=hour, count=1)
        except IntegrityError:  # another process opened this hour's bucket first
            bucket.update(count=F("count") + 1)
            return
        # A bucket opens at most once an hour per issuer: the moment to drop old ones.
        AuthFailureCount.objects.filter(hour__lt=hour - _FAILURE_BUCKETS_KEPT).delete()
    except DatabaseError as e:
        logger.warning("authentication failure not counted: %s", _summary(e))


def _unauthorized(request: HttpRequest, issuer_id: str, reason: str) -> JsonResponse:
    _count_failure(issuer_id)
    # The reason and the peer, never the credential itself.
    logger.warning(
        "D1 notification for %s refused (D1_NOTIFY_AUTH=%s) from %s: %s",
        issuer_id,
        settings.D1_NOTIFY_AUTH,
        _remote(request),
        reason,
    )
    response = _error(401, "authentication required")
    if settings.D1_NOTIFY_AUTH == "bearer":
        response["WWW-Authenticate"] = 'Bearer realm="d1-notifications"'
    return response


# --- Body ----------------------------------------------------------------------------------


def _chunked_without_length(request: HttpRequest) -> bool:
    # WSGI hands Django no chunked body: a 400 for the empty body left would lose it for good,
    # while 411 makes D1 deliver again (docs/deploy.md: the proxy sends a Content-Length).
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked and not request.META.get("CONTENT_LENGTH")


def _read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The raw body, or None when it is larger than `limit`: declared length first, then actual."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    # Read from the stream rather than request.body, whose DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB)
    # would refuse bodies this endpoint accepts.
    body = request.read(limit + 1)
    return None if len(body) > limit else body


def _safe_headers(request: HttpRequest) -> dict[str, str]:
    names = list(_SAFE_HEADERS)
    if settings.D1_NOTIFY_AUTH == "proxy-mtls":
        names += [settings.D1_NOTIFY_MTLS_VERIFY_HEADER, settings.D1_NOTIFY_MTLS_SUBJECT_HEADER]
    kept = {
        name.lower(): request.headers[name][:_HEADER_MAX]
        for name in names
        if name in request.headers
    }
    kept["remote-addr"] = _remote(request)
    return kept


class _AppliedAfterAnswer(HttpResponse):
    """A 204 whose server, once the answer is sent, applies what is pending (TRACKER_APPLY_INLINE:
    the demo on SQLite, where no applier process runs)."""

    def close(self) -> None:
        super().close()
        try:
            applier.drain()
        except Exception:
            logger.exception("inline apply failed; the bodies stay pending")


def _store(request: HttpRequest, issuer_id: str, body: bytes) -> HttpResponse:
    # The answer waits for the INSERT's commit only: applying is the applier's (docs/notifications).
    error = inbox.quick_check(body)
    try:
        inbox.store(issuer_id, body, _safe_headers(request), error=error)
    except DatabaseError as e:
        logger.warning(
            "D1 notification for %s not stored, answered 503: %s", issuer_id, _summary(e)
        )
        return _unavailable()
    if error:
        # Stored, and D1 never retries a 400: the inbox and delivery health show it.
        logger.error("D1 notification for %s rejected: %s", issuer_id, error)
        return _error(400, error)
    if settings.TRACKER_APPLY_INLINE:
        return _AppliedAfterAnswer(status=204)
    return HttpResponse(status=204)


# --- Views ---------------------------------------------------------------------------------


class D1EndpointsMiddleware:
    """Answers D1's endpoints straight from their views, ahead of the staff pages' middleware
    (sessions, language and time zone, CSRF, login, messages, CSP, no-store, sign-in throttling):
    they serve no page and no session, authenticate on their own, and are D1's hot path. Only the
    middleware before this one (correlation id, HTTPS) applies to them."""

    _PREFIXES = ("/notifications/d1/", "/authz/d1/")
    _VIEWS = frozenset({"d1_notifications", "d1_token"})

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self._PREFIXES):
            try:
                match = resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None and match.url_name in self._VIEWS:
                request.resolver_match = match
                response: HttpResponse = match.func(request, *match.args, **match.kwargs)
                return response
        return self.get_response(request)


@login_not_required
@csrf_exempt
@require_POST
def d1_notifications(request: HttpRequest, issuer_id: str) -> HttpResponse:
    """D1's notifications (REFERENCE §4), answered as CONTRACT §3 says."""
    if issuer_id not in settings.D1_ISSUER_IDS:
        return _error(404, f"issuer {issuer_id[:10]!r} is not served here")
    if reason := _header_refusal(request):
        return _unauthorized(request, issuer_id, reason)
    if _chunked_without_length(request):
        return _error(411, "Content-Length is required")
    limit = settings.D1_NOTIFY_MAX_BODY_BYTES
    try:
        body = _read_body(request, limit)
    except UnreadablePostError:  # the connection broke mid-body; nothing to keep, D1 retries
        return _unavailable()
    if body is None:
        return _error(413, f"body is larger than {limit} bytes")
    if reason := _signature_refusal(request, body):
        return _unauthorized(request, issuer_id, reason)
    if request.content_type != "application/json":
        logger.warning("D1 notification for %s sent as %r", issuer_id, request.content_type)
        return _error(415, "Content-Type must be application/json")
    return _store(request, issuer_id, body)


@login_not_required
@csrf_exempt
@require_POST
def d1_token(request: HttpRequest) -> JsonResponse:
    """Our OAuth2 token endpoint for D1: client-credentials grant with HTTP Basic (RFC 6749)."""
    if reason := _client_refusal(request):
        _count_failure(AuthFailureCount.TOKEN_ENDPOINT)
        logger.warning("D1 token request refused from %s: %s", _remote(request), reason)
        response = JsonResponse({"error": "invalid_client"}, status=401)
        response["WWW-Authenticate"] = 'Basic realm="d1-token"'
        return response
    grant_type = request.POST.get("grant_type", "")
    if grant_type != "client_credentials":
        error = "unsupported_grant_type" if grant_type else "invalid_request"
        return JsonResponse({"error": error}, status=400)
    token = _signer().sign_object({"sub": settings.D1_NOTIFY_CLIENT_ID})
    response = JsonResponse(
        {"access_token": token, "token_type": "Bearer", "expires_in": settings.D1_NOTIFY_TOKEN_TTL}
    )
    response["Cache-Control"] = "no-store"  # RFC 6749 §5.1: responses with tokens
    response["Pragma"] = "no-cache"
    return response

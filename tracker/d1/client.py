"""The D1 client: the only code that speaks HTTP to D1 (REFERENCE §6 and §9).

One pooled httpx.Client per process and profile keeps connections warm. Each call:

1. asks the shared circuit breaker (tracker/d1/breaker.py) whether D1 is worth trying;
2. takes the shared access token (tracker/d1/token.py), fetching one if needed; a 401 refreshes
   it once and retries once;
3. retries only what is safe to retry (connect errors, timeouts, D1_RETRY_STATUSES) with capped
   exponential backoff and full jitter, honours Retry-After up to D1_RETRY_AFTER_CAP, and never
   lets the whole call outlive its profile's time budget;
4. in the background profile, waits for its turn in the shared D1_MAX_RPS budget (budget.py);
5. sends a fresh random x-correlation-id (never derived from card data: D1 logs it in clear) and
   logs it with the status, the attempts and the latency.

Callers get typed values or a D1Error subclass, never an httpx exception or a raw dict.
"""

import email.utils
import enum
import logging
import os
import random
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from tracker.d1 import breaker, budget, schema, token
from tracker.d1.errors import (
    D1Answered,
    D1BadResponse,
    D1BreakerOpen,
    D1Error,
    D1NotFound,
    D1Rejected,
    D1Unavailable,
)
from tracker.d1.schema import BadPayload, Operation, parse_status_response
from tracker.ops import logs, metrics

__all__ = [
    "D1BadResponse",
    "D1BreakerOpen",
    "D1Client",
    "D1Error",
    "D1NotFound",
    "D1Rejected",
    "D1Unavailable",
    "Profile",
    "breaker_state",
    "client",
    "new_correlation_id",
    "reset_clients",
]

logger = logging.getLogger(__name__)

_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class Profile(enum.Enum):
    """How long a caller can wait: an agent on the phone, or a background sweep."""

    INTERACTIVE = "INTERACTIVE"
    BACKGROUND = "BACKGROUND"


@dataclass(frozen=True)
class _Policy:
    connect_timeout: float
    read_timeout: float
    retries: int
    budget: float


def _policy(profile: Profile) -> _Policy:
    prefix = f"D1_{profile.value}_"
    return _Policy(
        connect_timeout=getattr(settings, prefix + "CONNECT_TIMEOUT"),
        read_timeout=getattr(settings, prefix + "READ_TIMEOUT"),
        retries=getattr(settings, prefix + "RETRIES"),
        budget=getattr(settings, prefix + "BUDGET"),
    )


@dataclass
class _Call:
    """Book-keeping for one call, for the budget and the log line."""

    what: str
    policy: _Policy
    correlation_id: str = field(default_factory=lambda: new_correlation_id())
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    outcome: str = "-"

    @property
    def deadline(self) -> float:
        return self.started + self.policy.budget

    def timeout(self) -> httpx.Timeout:
        """The profile's timeouts, cut down to what is left of the budget."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.01:
            raise D1Unavailable(f"{self.what}: the {self.policy.budget:g}s time budget is spent")
        connect = min(self.policy.connect_timeout, remaining)
        read = min(self.policy.read_timeout, remaining)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class D1Client:
    """D1's inbound API for one profile; build it with client(), or pass any httpx.Client."""

    http: httpx.Client
    profile: Profile = Profile.INTERACTIVE

    def get_production_status(self, issuer_id: str, card_id: str) -> list[Operation]:
        """The card's current operation(s). Reference: REFERENCE §6, "On-demand status".

        Raises ValueError for ids that D1 could never accept (checked before any request).
        """
        if not schema.ISSUER_ID.fullmatch(issuer_id):
            raise ValueError(f"{issuer_id!r} is not a 10-character D1 issuerId")
        if not schema.CARD_ID.fullmatch(card_id):
            raise ValueError(f"{card_id!r} is not a D1 cardId (1-48 of A-Z a-z 0-9 _ -)")
        path = settings.D1_STATUS_PATH_TEMPLATE.format(issuerId=issuer_id, cardId=card_id)
        response = self._request("GET", path, issuer_id, what="productionStatus")
        try:
            operations = parse_status_response(_json(response))
        except BadPayload as e:
            raise D1BadResponse(f"productionStatus answer: {e}") from None
        if not operations:
            raise D1BadResponse("productionStatus answer holds no operation")
        # Applying an operation for another card would write to that card's order.
        strays = {op.card_id for op in operations} - {card_id}
        if strays:
            raise D1BadResponse(f"productionStatus for {card_id} answered about {sorted(strays)}")
        return operations

    def _request(self, method: str, path: str, issuer_id: str, *, what: str) -> httpx.Response:
        """One call: breaker, token, retries; a 2xx response or a D1Error."""
        call = _Call(what=what, policy=_policy(self.profile))
        # Every log line of the call carries its x-correlation-id (tracker/ops/logs.py).
        with logs.correlated(call.correlation_id):
            return self._call(method, path, issuer_id, call)

    def _call(self, method: str, path: str, issuer_id: str, call: _Call) -> httpx.Response:
        what = call.what
        try:
            ticket = breaker.admit(call.policy.budget)
        except D1BreakerOpen:
            call.outcome = "breaker open"
            _log(call, logging.WARNING, "breaker_open")
            raise
        try:
            response = _checked(self._attempts(method, path, issuer_id, call), what)
        except D1Unavailable as e:
            breaker.record_failure(ticket)
            call.outcome = call.outcome if call.outcome != "-" else str(e)
            _log(call, logging.WARNING, "unavailable")
            raise
        except (D1Answered, D1BadResponse) as e:
            breaker.record_success(ticket)
            call.outcome = call.outcome if call.outcome != "-" else str(e)
            _log(call, logging.INFO, _result(e))
            raise
        except BaseException as e:
            breaker.release(ticket)
            call.outcome = f"{type(e).__name__}: {e}"
            _log(call, logging.ERROR, "error")
            raise
        breaker.record_success(ticket)
        _log(call, logging.INFO, "ok")
        return response

    def _attempts(self, method: str, path: str, issuer_id: str, call: _Call) -> httpx.Response:
        retries = 0
        refreshed = False
        while True:
            call.attempts += 1
            try:
                bearer = token.get(
                    issuer_id, lambda: self._fetch_token(issuer_id, call), call.deadline
                )
                response = self._send(method, path, bearer, call)
                call.outcome = str(response.status_code)
                if response.status_code == 401 and not refreshed:
                    # An expired or revoked token: one refresh and one more try, outside the
                    # retry count, because a 401 says nothing about D1's health.
                    token.discard(issuer_id, bearer)
                    refreshed = True
                    continue
                if response.status_code in settings.D1_RETRY_STATUSES:
                    raise _Retryable(f"HTTP {response.status_code}", _retry_after(response))
                return response
            except _Retryable as e:
                call.outcome = e.reason
                if retries >= call.policy.retries:
                    raise D1Unavailable(
                        f"{call.what}: {e.reason} after {call.attempts} attempt(s)"
                    ) from None
                delay = _delay(retries, e.retry_after)
                if time.monotonic() + delay >= call.deadline:
                    raise D1Unavailable(
                        f"{call.what}: {e.reason}; no time left in the"
                        f" {call.policy.budget:g}s budget for another attempt"
                    ) from None
                retries += 1
                time.sleep(delay)

    def _send(self, method: str, url: str, bearer: str, call: _Call) -> httpx.Response:
        if self.profile is Profile.BACKGROUND:
            # Every attempt of background work spends the shared D1_MAX_RPS budget; the wait
            # for a slot is ours, not D1's, so it does not count against the call's time budget.
            waited = budget.acquire()
            metrics.budget_wait(waited)
            call.started += waited
        headers = {"authorization": f"Bearer {bearer}", "x-correlation-id": call.correlation_id}
        return self._http(method, url, call, headers=headers)

    def _fetch_token(self, issuer_id: str, call: _Call) -> tuple[str, float]:
        """Exchange a fresh assertion for an access token (one attempt; REFERENCE §9)."""
        response = self._http(
            "POST",
            settings.D1_TOKEN_URL,
            call,
            data={"grant_type": _JWT_BEARER, "assertion": token.assertion(issuer_id)},
            headers={"x-correlation-id": call.correlation_id},
        )
        if response.status_code in settings.D1_RETRY_STATUSES:
            raise _Retryable(f"token endpoint HTTP {response.status_code}", _retry_after(response))
        document = _json(_checked(response, "token request"))
        access_token = document.get("access_token") if isinstance(document, dict) else None
        expires_in = document.get("expires_in", 900) if isinstance(document, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise D1BadResponse("token answer has no access_token")
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            raise D1BadResponse("token answer has no usable expires_in")
        return access_token, float(expires_in)

    def _http(self, method: str, url: str, call: _Call, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, timeout=call.timeout(), **kwargs)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out ({type(e).__name__})") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
            if _is_tls_failure(e):
                # A certificate D1 or we got wrong will not fix itself on the next attempt.
                raise D1Unavailable(f"{call.what}: TLS with D1 failed: {e}") from None
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        except httpx.HTTPError as e:
            raise D1Unavailable(f"{call.what}: {type(e).__name__}: {e}") from None


_clients: dict[tuple[int, Profile], D1Client] = {}
_clients_lock = threading.Lock()


def client(profile: Profile = Profile.INTERACTIVE) -> D1Client:
    """The process's D1 client for this profile, created on first use and reused after."""
    key = (os.getpid(), profile)
    with _clients_lock:
        existing = _clients.get(key)
        if existing is None:
            existing = _clients[key] = D1Client(_http_client(), profile)
        return existing


def reset_clients() -> None:
    """Close and forget the pooled clients (after D1_* settings change, and in tests)."""
    with _clients_lock:
        for existing in _clients.values():
            existing.http.close()
        _clients.clear()


def breaker_state() -> dict[str, Any]:
    """The shared breaker: `{"state": closed|open|half_open, "failures", "opened_at"}`."""
    return breaker.state()


def new_correlation_id() -> str:
    """A random x-correlation-id matching ^[A-Za-z0-9_-]{1,64}$ (22 characters)."""
    return secrets.token_urlsafe(16)


@receiver(setting_changed)
def _forget_clients_on_new_settings(setting: str, **kwargs: Any) -> None:
    if setting.startswith("D1_"):
        reset_clients()


def _http_client() -> httpx.Client:
    return httpx.Client(
        base_url=settings.D1_BASE_URL,
        verify=_tls_context(),
        headers={"accept": "application/json", "user-agent": "tracker"},
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        # Every request passes its own timeout, cut to the call's budget.
        timeout=httpx.Timeout(10.0),
    )


def _tls_context() -> ssl.SSLContext:
    # Built by hand because httpx 0.28 deprecates verify=<path> and cert=.
    context = ssl.create_default_context(
        cafile=str(settings.D1_TLS_CA_BUNDLE) if settings.D1_TLS_CA_BUNDLE else None
    )
    if settings.D1_TLS_CLIENT_CERT:
        context.load_cert_chain(str(settings.D1_TLS_CLIENT_CERT), str(settings.D1_TLS_CLIENT_KEY))
    return context


def _checked(response: httpx.Response, what: str) -> httpx.Response:
    """The response if it is a 2xx; otherwise the matching D1Error."""
    status = response.status_code
    if 200 <= status < 300:
        return response
    error_code, error = _error_body(response)
    detail = f"{what}: D1 answered {status}" + (
        f" ({error_code}: {error})" if error_code or error else ""
    )
    if status == 404:
        raise D1NotFound(detail, status, error_code, error)
    if 400 <= status < 500:
        raise D1Rejected(detail, status, error_code, error)
    if status >= 500:
        raise D1Unavailable(detail)
    raise D1BadResponse(detail)


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """D1's `{"errorCode", "error"}`, when the body is one."""
    try:
        document = schema.loads(response.content)
    except ValueError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    code, error = document.get("errorCode"), document.get("error")
    return (
        code[:100] if isinstance(code, str) else None,
        error[:500] if isinstance(error, str) else None,
    )


def _json(response: httpx.Response) -> Any:
    try:
        return schema.loads(response.content)
    except schema.TooDeep:
        raise D1BadResponse(
            f"D1 answered {response.status_code} with JSON nested too deeply to read"
        ) from None
    except ValueError as e:
        raise D1BadResponse(
            f"D1 answered {response.status_code} with a body that is not JSON: {e}"
        ) from None


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date; None if absent or garbled."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _delay(retries_so_far: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, settings.D1_RETRY_AFTER_CAP)
    # Full jitter (a uniform draw below the capped exponential) keeps many callers that failed
    # together from retrying together.
    ceiling = min(settings.D1_BACKOFF_CAP, settings.D1_BACKOFF_BASE * 2**retries_so_far)
    return random.uniform(0, ceiling)


def _is_tls_failure(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _result(error: D1Error) -> str:
    if isinstance(error, D1NotFound):
        return "not_found"
    return "rejected" if isinstance(error, D1Rejected) else "bad_response"


def _log(call: _Call, level: int, result: str) -> None:
    seconds = time.monotonic() - call.started
    metrics.d1_call(call.what, result, seconds)
    logger.log(
        level,
        "D1 %s: %s after %d attempt(s) in %d ms (x-correlation-id %s)",
        call.what,
        call.outcome,
        call.attempts,
        seconds * 1000,
        call.correlation_id,
    )

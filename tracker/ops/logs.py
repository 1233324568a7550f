"""Log lines: the correlation id of the D1 call or notification they belong to, optional JSON
(TRACKER_LOG_JSON=1), and never a secret or a card number.

Every handler of the LOGGING setting runs ContextFilter, which:
- adds `correlation_id`: the x-correlation-id of the D1 call in progress (tracker/d1/client.py),
  or of the HTTP request being served (CorrelationMiddleware: the caller's x-correlation-id when
  it is well-formed, else a random one), "-" outside both;
- rewrites the message (and a traceback) with secrets and card numbers masked: the values of the
  secret settings, bearer/basic credentials, JWTs, and any 13-19 digit number that passes the
  Luhn check (a PAN, masked by tracker/pan.py), whatever code logged it.
"""

import contextvars
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from tracker import pan

_correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "tracker_correlation_id", default="-"
)
_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{1,64}")
MASK = "[redacted]"
_CREDENTIALS = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    r"|(\"?(?:access_token|assertion|client_secret|password|token)\"?\s*[:=]\s*\"?)[^\s\"&,]+"
)


def correlation_id() -> str:
    return _correlation_id.get()


@contextmanager
def correlated(value: str) -> Iterator[None]:
    """Log lines inside carry this correlation id."""
    reset = _correlation_id.set(value)
    try:
        yield
    finally:
        _correlation_id.reset(reset)


def _secret_values() -> list[str]:
    values = [
        settings.SECRET_KEY,
        settings.D1_NOTIFY_CLIENT_SECRET,
        *settings.D1_NOTIFY_HMAC_SECRETS,
        getattr(settings, "MAILERS", {})["default"].get("OPTIONS", {}).get("password", ""),
        getattr(settings, "TRACKER_METRICS_TOKEN", ""),
        getattr(settings, "TRACKER_ALERT_WEBHOOK_URL", ""),
    ]
    # Short values would mask ordinary words; a real secret is longer than this.
    return [value for value in values if value and len(value) >= 8]


def _mask_credential(match: re.Match) -> str:
    if match.group(1):
        return f"{match.group(1)} {MASK}"
    if match.group(2):
        return f"{match.group(2)}{MASK}"
    return MASK


def scrub(text: str) -> str:
    """The text with secrets and card numbers masked."""
    for value in _secret_values():
        text = text.replace(value, MASK)
    text = _CREDENTIALS.sub(_mask_credential, text)
    return pan.mask_pans(text)


class ContextFilter(logging.Filter):
    """Adds the correlation id and masks secrets and card numbers (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get()
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters print exc_text when exc_info is gone: only the masked text is left.
            record.exc_text = scrub(record.exc_text)
            record.exc_info = None
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time, level, logger, message, correlation_id (and exc_info)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault(
            "rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"}
        )
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["correlation_id"] = getattr(record, "correlation_id", "-")
        if record.exc_text:
            log_record["exc_info"] = record.exc_text


class CorrelationMiddleware:
    """Each request's log lines carry one correlation id, sent back in x-correlation-id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("x-correlation-id", "")
        value = given if _WELL_FORMED.fullmatch(given) else secrets.token_urlsafe(16)
        with correlated(value):
            response = self.get_response(request)
        response.headers.setdefault("x-correlation-id", value)
        return response

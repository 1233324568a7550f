"""Strict parsing of environment variables for settings.py.

Every helper raises ImproperlyConfigured naming the variable, so a bad value stops start-up with
a message an operator can act on instead of a traceback deep inside a request.
"""

import ipaddress
import os
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HEADER_NAME = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def string(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def required(name: str, why: str) -> str:
    value = _raw(name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set: {why}")
    return value


def boolean(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be 0 or 1 (got {value!r})")


def _number[T: (int, float)](name: str, default: T, kind: Callable[[str], T], minimum: T) -> T:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        parsed = kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number (got {value!r})") from None
    if parsed < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum} (got {value!r})")
    return parsed


def integer(name: str, default: int, minimum: int = 0) -> int:
    return _number(name, default, int, minimum)


def decimal(name: str, default: float, minimum: float = 0.0) -> float:
    return _number(name, default, float, minimum)


def csv(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in string(name, default).split(",") if item.strip()]


def integers(name: str, default: str, minimum: int, maximum: int) -> list[int]:
    """Parse a comma-separated list of whole numbers within [minimum, maximum]."""
    result = []
    for item in csv(name, default):
        if not item.isdigit() or not minimum <= int(item) <= maximum:
            raise ImproperlyConfigured(
                f"{name} must list whole numbers from {minimum} to {maximum} (bad: {item!r})"
            )
        result.append(int(item))
    return result


def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = string(name, default)
    if value not in allowed:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def mapping(name: str, default: str = "") -> dict[str, str]:
    """Parse `key=value,key=value`."""
    result = {}
    for item in csv(name, default):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(f"{name} must look like key=value,key=value (bad: {item!r})")
        result[key.strip()] = value.strip()
    return result


def timezone_name(name: str, value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(f"{name}: unknown time zone {value!r}") from None
    return value


def existing_file(name: str) -> Path | None:
    value = string(name)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ImproperlyConfigured(f"{name} names a file that does not exist: {value}")
    return path


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def weekdays(name: str, default: str) -> frozenset[int]:
    """`mon,tue,…` as Python weekday numbers (Monday is 0)."""
    days = [day.lower() for day in csv(name, default)]
    unknown = [day for day in days if day not in _WEEKDAYS]
    if unknown or not days:
        raise ImproperlyConfigured(
            f"{name} must list days among {','.join(_WEEKDAYS)} (got {string(name, default)!r})"
        )
    return frozenset(_WEEKDAYS.index(day) for day in days)


_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION = re.compile(r"(?:\d+[smhd])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`90s`, `5m`, `1h`, `1h30m`, `2d` as whole seconds; ValueError for anything else or zero."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration like 90s, 5m or 1h (units: s, m, h, d)")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return seconds


def duration(name: str, default: str) -> int:
    """A duration setting such as `90s`, `5m` or `1h`, in seconds."""
    try:
        return parse_duration(string(name, default))
    except ValueError as e:
        raise ImproperlyConfigured(f"{name}: {e}") from None


def ip_networks(name: str, default: str = "") -> list[str]:
    """Comma-separated IP addresses or CIDR networks, normalized (`10.0.0.1` -> `10.0.0.1/32`)."""
    networks = []
    for item in csv(name, default):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not an IP address or network"
            ) from None
    return networks


def header_name(name: str, default: str) -> str:
    """An HTTP header name such as `X-D1-Signature` (letters, digits and dashes)."""
    value = string(name, default)
    if not _HEADER_NAME.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name} must be an HTTP header name like X-Name (got {value!r})"
        )
    return value


def optional_duration(name: str, default: str) -> int:
    """A duration setting that `0` or `off` turns off (returns 0)."""
    if string(name, default).strip().lower() in ("0", "off"):
        return 0
    return duration(name, default)


def counts(name: str, allowed: tuple[str, ...]) -> dict[str, int]:
    """`key=N,key=N` with keys among `allowed` and whole numbers ≥ 0."""
    result = {}
    for key, value in mapping(name).items():
        if key not in allowed:
            raise ImproperlyConfigured(f"{name}: {key!r} is not one of {', '.join(allowed)}")
        if not value.isdigit():
            raise ImproperlyConfigured(f"{name}: {key}={value!r} is not a whole number")
        result[key] = int(value)
    return result

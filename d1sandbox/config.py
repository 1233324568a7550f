"""The sandbox's knobs: how cards live and notifications flow (Config) and what goes wrong (Faults).

Both are plain dataclasses that the control API reads and updates from JSON with snake_case keys
equal to the field names; an unknown key or a wrong type is refused with a message naming it.
"""

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# A fault is an HTTP status to answer with, or one of these; "token:" aims it at the token endpoint.
FAULT = re.compile(r"(token:)?([1-5]\d\d|hang|reset|malformed)")


class ConfigError(ValueError):
    """A control request asked for a setting that does not exist or cannot hold that value."""


@dataclass
class Config:
    """How the sandbox's cards live and how it pushes notifications."""

    # Lifecycle: stage durations are divided by `speed` (120 = two hours pass in a minute).
    speed: float = 1.0
    seed: int | None = None
    data_exception_share: float = 0.05
    cancel_share: float = 0.03
    unknown_status_share: float = 0.05
    # Seconds an access token lives (D1: 15 minutes).
    token_ttl: float = 900.0
    # Notifications: Tracker's base URL; empty = push nothing.
    notify_url: str = ""
    notify_token_url: str = ""  # empty: {notify_url}/authz/d1/v1/oauth2/token
    notify_auth: str = "bearer"  # bearer (client credentials at notify_token_url) | none
    notify_client_id: str = ""
    notify_client_secret: str = ""
    notify_batch_size: int = 10
    notify_interval: float = 1.0  # seconds between push cycles; 0 = only on flush
    notify_duplicate_share: float = 0.0
    notify_reorder_share: float = 0.0
    notify_drop_share: float = 0.0
    notify_max_attempts: int = 6
    notify_retry_base: float = 1.0
    notify_retry_cap: float = 60.0
    notify_timeout: float = 5.0


@dataclass
class Faults:
    """What goes wrong on D1's API (status, ordering) and, when aimed there, its token endpoint."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    # Probability per request of each fault, e.g. {"503": 0.1, "429": 0.05, "hang": 0.01}.
    rates: dict[str, float] = field(default_factory=dict)
    # One-shot faults consumed in order, one per request: ["503", "503"], ["401"], ["token:503"].
    next: list[str] = field(default_factory=list)
    retry_after: str = "1"  # Retry-After sent with a 429: seconds or an HTTP date
    hang_seconds: float = 30.0


_SHARES = {name for name in Config.__dataclass_fields__ if name.endswith("_share")}


def to_json(settings: Config | Faults) -> dict[str, Any]:
    return asdict(settings)


def update(settings: Config | Faults, changes: Any) -> None:
    """Apply `changes` (a JSON object) in place, or raise ConfigError naming the bad key."""
    if not isinstance(changes, dict):
        raise ConfigError("expected a JSON object")
    known = {f.name: f for f in fields(settings)}
    checked = {}
    for key, value in changes.items():
        if key not in known:
            raise ConfigError(f"{key}: no such setting (known: {', '.join(sorted(known))})")
        checked[key] = _checked(key, value, known[key].type)
    for key, value in checked.items():
        setattr(settings, key, value)


def _checked(key: str, value: Any, declared: Any) -> Any:
    if key == "seed":
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError("seed: must be a whole number or null")
        return value
    if key == "rates":
        if not isinstance(value, dict) or not all(_is_rate(k, v) for k, v in value.items()):
            raise ConfigError('rates: must map fault names to probabilities, e.g. {"503": 0.1}')
        return {k: float(v) for k, v in value.items()}
    if key == "next":
        if not isinstance(value, list) or not all(
            isinstance(v, str) and FAULT.fullmatch(v) for v in value
        ):
            raise ConfigError('next: must be a list of faults, e.g. ["503", "hang", "token:401"]')
        return list(value)
    if key == "notify_auth" and value not in ("bearer", "none"):
        raise ConfigError("notify_auth: must be bearer or none")
    if isinstance(value, bool):
        raise ConfigError(f"{key}: booleans are not accepted here")
    if declared is float and isinstance(value, int | float):
        if value < 0 or (key in _SHARES and value > 1):
            raise ConfigError(f"{key}: out of range")
        return float(value)
    if declared is int and isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1")
        return value
    if declared is str and isinstance(value, str):
        return value
    raise ConfigError(
        f"{key}: expected {getattr(declared, '__name__', declared)}, got {type(value).__name__}"
    )


def _is_rate(name: Any, value: Any) -> bool:
    return (
        isinstance(name, str)
        and FAULT.fullmatch(name) is not None
        and not name.startswith("token:")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value <= 1
    )

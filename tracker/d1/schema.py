"""D1's operation object (REFERENCE §1) parsed into frozen values.

Notifications and on-demand answers carry the same object. Parsing is strict about what the
database must hold (identifiers, lengths, timestamps) and lenient about everything D1 may grow:
unknown keys are kept in `raw`, unknown statuses are plain strings. Every error names the field.
"""

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any, Literal, overload

import orjson

from tracker import pan

_ID = re.compile(r"[A-Za-z0-9_-]+")
# D1's identifiers (REFERENCE §1, §4), for whoever checks one before asking D1 or storing it.
ISSUER_ID = re.compile(r"[A-Za-z0-9]{10}")
CARD_ID = re.compile(r"[A-Za-z0-9_-]{1,48}")


_IDENTIFIERS = ("cardId", "operationId")

# D1's operation objects are four levels deep; anything far deeper is not one.
MAX_DEPTH = 32


class BadPayload(ValueError):
    """A body or operation that can never be applied, with the field that is wrong."""

    def __init__(self, field_path: str, problem: str) -> None:
        self.field = field_path
        self.problem = problem
        super().__init__(f"{field_path}: {problem}" if field_path else problem)


@dataclass(frozen=True)
class Shipment:
    carrier: str | None
    tracking_number: str | None
    status: str | None
    message: str | None
    tracking_url: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Details:
    status: str | None
    reason: str | None
    due_date: date | None
    due_at: datetime | None  # set only when D1 sent dueDate as a datetime
    production_site: str | None
    shipment: Shipment | None
    input_file_name: str | None
    issuer_request_id: str | None
    tracking_type: str | None


@dataclass(frozen=True)
class Operation:
    operation_id: str
    operation: str
    status: str
    start_time: datetime
    end_time: datetime | None
    card_id: str
    details: Details | None
    error_code: str | None
    error: str | None
    input_file_name: str | None
    issuer_request_id: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def business_status(self) -> str | None:
        """`details.status`, the card's issuance stage; None when D1 sent no details."""
        return self.details.status if self.details else None

    @cached_property
    def canonical_hash(self) -> str:
        """sha256 of the content with keys sorted and timestamps as UTC instants (REFERENCE §4)."""
        normalized = dict(self.raw)
        normalized["startTime"] = _instant(self.start_time)
        if self.end_time is not None:
            normalized["endTime"] = _instant(self.end_time)
        if self.details is not None and self.details.due_at is not None:
            normalized["details"] = {
                **normalized["details"],
                "dueDate": _instant(self.details.due_at),
            }
        return _sha256(normalized)

    @cached_property
    def state_hash(self) -> str:
        """The alternative dedup key: only the fields that describe the state."""
        shipment = self.details.shipment if self.details else None
        return _sha256(
            [
                self.operation_id,
                self.status,
                self.business_status,
                shipment and shipment.status,
                shipment and shipment.tracking_number,
                shipment and shipment.message,
                self.end_time and _instant(self.end_time),
            ]
        )


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


class TooDeep(ValueError):
    """A JSON document nested deeper than Python's parser can follow."""


def loads(raw: bytes | str) -> Any:
    """json.loads for what comes from outside (D1's bodies and answers): a document nested too
    deeply to read is a ValueError like any other unreadable one, never a RecursionError.

    orjson reads the common case several times faster; what it refuses (NaN, Infinity, UTF-16, a
    lone surrogate) is read by the standard library, which has the last word, and so is a document
    with a run of 19 digits or more, since orjson reads an integer beyond 64 bits as a float.
    """
    if isinstance(raw, bytes):
        long_digits = bool(_LONG_DIGITS.search(raw))
    else:
        long_digits = bool(_LONG_DIGITS_TEXT.search(raw))
    if not long_digits:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise TooDeep("nested too deeply to be read") from None


def parse_body(body: bytes | str) -> list[Any]:
    """The `operations` list of a notification body; BadPayload if the body can never succeed."""
    try:
        document = loads(body)
    except TooDeep:
        raise BadPayload("", "body is nested too deeply to be read") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise BadPayload("", f"body is not JSON ({e})") from None
    if not isinstance(document, dict):
        raise BadPayload("", "body must be a JSON object with an 'operations' list")
    operations = document.get("operations")
    if not isinstance(operations, list):
        raise BadPayload("operations", "must be a list of operation objects")
    return operations


def parse_status_response(document: Any) -> list[Operation]:
    """An on-demand answer: `{"operations": [...]}` or, as REFERENCE §6 allows, one bare object."""
    if isinstance(document, dict) and "operations" in document:
        items = document["operations"]
        if not isinstance(items, list):
            raise BadPayload("operations", "must be a list of operation objects")
        return [parse_operation(item, f"operations[{i}]") for i, item in enumerate(items)]
    return [parse_operation(document)]


def parse_operations(items: list[Any]) -> Iterator[tuple[int, Operation | BadPayload]]:
    """Each item on its own, so one bad item does not spoil the others of a bulk body."""
    for index, item in enumerate(items):
        try:
            yield index, parse_operation(item, f"operations[{index}]")
        except BadPayload as e:
            yield index, e


def parse_operation(obj: Any, where: str = "") -> Operation:
    """One operation object; BadPayload names the first wrong field. Card numbers anywhere in it
    are masked (tracker/pan.py); one in an identifier makes the operation unusable."""
    reader = _Reader(obj, where)
    _refuse_unstorable(obj, where)
    for key in _IDENTIFIERS:
        if isinstance(obj.get(key), str) and pan.is_or_was_pan(obj[key]):
            raise BadPayload(reader.path(key), "holds a card number, which is never stored")
    obj = pan.mask_in_json(obj)
    reader = _Reader(obj, where)
    details = obj.get("details") if isinstance(obj, dict) else None
    return Operation(
        operation_id=reader.identifier("operationId", 64),
        operation=reader.text("operation", required=True, max_length=32),
        status=reader.text("status", required=True, max_length=32),
        start_time=reader.timestamp("startTime", required=True),
        end_time=reader.timestamp("endTime"),
        card_id=reader.identifier("cardId", 48),
        details=None if details is None else _parse_details(details, reader.path("details")),
        error_code=reader.text("errorCode"),
        error=reader.text("error"),
        input_file_name=reader.text("inputFileName", max_length=255),
        issuer_request_id=reader.text("issuerRequestId", max_length=255),
        raw=obj,
    )


def _parse_details(obj: Any, where: str) -> Details:
    reader = _Reader(obj, where)
    shipment = obj.get("shipment")
    due_date, due_at = reader.due("dueDate")
    return Details(
        status=reader.text("status", max_length=64),
        reason=reader.text("reason"),
        due_date=due_date,
        due_at=due_at,
        production_site=reader.text("productionSite", max_length=64),
        shipment=None if shipment is None else _parse_shipment(shipment, reader.path("shipment")),
        input_file_name=reader.text("inputFileName", max_length=255),
        issuer_request_id=reader.text("issuerRequestId", max_length=255),
        tracking_type=reader.text("trackingType", max_length=32),
    )


def _parse_shipment(obj: Any, where: str) -> Shipment:
    reader = _Reader(obj, where)
    return Shipment(
        carrier=reader.text("carrier", max_length=64),
        tracking_number=reader.text("trackingNumber", max_length=128),
        status=reader.text("status", max_length=64),
        message=reader.text("message"),
        tracking_url=reader.text("trackingUrl"),
        raw=obj,
    )


def _refuse_unstorable(obj: Any, where: str) -> None:
    """The operation is kept whole as sent, and PostgreSQL stores neither a NUL character
    (\\u0000) in text or JSON nor NaN or Infinity in JSON (which JSON itself does not allow,
    though Python's parser accepts them): one anywhere, key or value, makes the operation
    unusable. So does nesting deeper than D1 ever sends, which later steps could not walk."""
    if _storable(obj, 0):
        return  # the common case, checked without naming paths; the walk below names the problem
    stack = [(obj, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadPayload(path, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str) and "\x00" in value:
            raise BadPayload(path, "contains a NUL character (\\u0000)")
        if isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            raise BadPayload(path, f"is {name}, which is not a JSON number")
        if isinstance(value, dict):
            if any("\x00" in key for key in value):
                raise BadPayload(path or "operation", "has a key with a NUL character (\\u0000)")
            children = [(item, f"{path}.{key}" if path else key) for key, item in value.items()]
        elif isinstance(value, list):
            children = [(item, f"{path}[{index}]") for index, item in enumerate(value)]
        else:
            continue
        stack.extend((item, child, depth + 1) for item, child in reversed(children))


def _storable(value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all("\x00" not in key for key in value) and all(
            _storable(item, depth + 1) for item in value.values()
        )
    if isinstance(value, list):
        return all(_storable(item, depth + 1) for item in value)
    return True


class _Reader:
    """Reads typed fields out of one JSON object, naming the full path on error."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise BadPayload(where or "operation", "must be a JSON object")
        self.obj = obj
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    @overload
    def text(self, key: str, *, required: Literal[True], max_length: int | None = None) -> str: ...
    @overload
    def text(
        self, key: str, *, required: bool = False, max_length: int | None = None
    ) -> str | None: ...
    def text(
        self, key: str, *, required: bool = False, max_length: int | None = None
    ) -> str | None:
        value = self.obj.get(key)
        if value is None:
            if required:
                raise BadPayload(self.path(key), "is required")
            return None
        if not isinstance(value, str):
            raise BadPayload(self.path(key), f"must be a string, not {type(value).__name__}")
        if required and not value:
            raise BadPayload(self.path(key), "must not be empty")
        if max_length is not None and len(value) > max_length:
            raise BadPayload(self.path(key), f"is longer than {max_length} characters")
        return value

    def identifier(self, key: str, max_length: int) -> str:
        value = self.text(key, required=True)
        if len(value) > max_length or not _ID.fullmatch(value):
            raise BadPayload(
                self.path(key), f"must be 1-{max_length} characters of A-Z, a-z, 0-9, _ and -"
            )
        return value

    @overload
    def timestamp(self, key: str, *, required: Literal[True]) -> datetime: ...
    @overload
    def timestamp(self, key: str, *, required: bool = False) -> datetime | None: ...
    def timestamp(self, key: str, *, required: bool = False) -> datetime | None:
        value = self.text(key, required=required)
        return None if value is None else _parse_instant(value, self.path(key))

    def due(self, key: str) -> tuple[date | None, datetime | None]:
        """dueDate: format not specified publicly, so a date or a full datetime (REFERENCE §1)."""
        value = self.text(key)
        if value is None:
            return None, None
        if len(value) == 10:
            try:
                return date.fromisoformat(value), None
            except ValueError:
                raise BadPayload(self.path(key), f"is not a date: {value!r}") from None
        instant = _parse_instant(value, self.path(key))
        return instant.date(), instant


def _parse_instant(value: str, where: str) -> datetime:
    # fromisoformat (3.11+) takes any offset form and any number of fractional digits.
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadPayload(where, f"is not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        # D1 always sends an offset; a naive value is read as UTC rather than dropped.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()

"""The one writer of D1 state: every operation object, from any source, enters through
apply_many() (or apply() for one).

D1 delivers at least once, out of order, and reuses one operationId for every stage of an order,
so applying is idempotent on the content of each operation (REFERENCE §4) and ordered by lifecycle
rank (REFERENCE §3), never by arrival:

- a duplicate (same canonical content) is counted on the order and changes nothing else;
- a higher-ranked known status is applied; a lower one is kept in the timeline as *stale*;
- an unknown status is stored and flagged without touching the stage (*unrecognized*);
- two terminal outcomes that cannot both be true keep the first and flag a *conflict*;
- at CARD_SHIPPED rank, a repeated status refreshes the shipment (carrier updates);
- a newer operation (re-order: another operationId, later startTime) starts the order afresh.

Set-based: whatever the number of operations, a call costs the same statements: one that locks
(creating as needed) every order concerned, always in (issuer, card) order so that two writers
can never deadlock, one read of the orders, one of the events already known, one INSERT of the
new events and one write-back of the orders.
"""

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Field, Q
from django.utils import timezone

from tracker import attention, sla, transactions
from tracker.d1 import lifecycle
from tracker.d1 import shipment as carrier
from tracker.d1.schema import Operation, Shipment
from tracker.models import CardOrder, Outcome, Source, TimelineEvent

logger = logging.getLogger(__name__)

_LIVE_SOURCES = frozenset({Source.ON_DEMAND, Source.RECONCILE})
# What an operator would call "the state": a change here is a repair when reconciliation finds it.
_STATE_FIELDS = (
    "operation_id",
    "stage",
    "operation_status",
    "unrecognized_status",
    "conflict",
    "carrier",
    "tracking_number",
    "shipment_status",
    "due_date",
    "due_at",
    "error_code",
)
_SAVED_FIELDS = [
    field.name
    for field in CardOrder._meta.concrete_fields
    if field.name not in {"id", "issuer_id", "card_id", "first_seen_at"}
]
# Attributes any event may fill in when the order lacks them; applied events overwrite them.
_ATTRIBUTES = ("issuer_request_id", "input_file_name", "production_site", "tracking_type")
# Bound parameters per statement stay under SQLite's 32,766 (PostgreSQL allows 65,535).
_MAX_PARAMETERS = 30_000


@dataclass(frozen=True)
class Delivery:
    """One operation object to apply, with where and when it came from."""

    issuer_id: str
    operation: Operation
    received_at: datetime
    inbox_id: int | None = None  # the notification body it came in, if any


@dataclass(frozen=True)
class Result:
    """What happened to one operation: its outcome, its order (None if not tracked) and whether
    the order's state changed."""

    verdict: Outcome
    order_id: int | None
    changed: bool


def apply(
    issuer_id: str,
    operation: Operation,
    source: Source,
    *,
    inbox_id: int | None = None,
    received_at: datetime | None = None,
) -> Result:
    """Apply one operation object to its card order."""
    delivery = Delivery(issuer_id, operation, received_at or timezone.now(), inbox_id)
    return apply_many([delivery], source)[0]


def apply_many(
    deliveries: Sequence[Delivery], source: Source, *, checked_live: bool = False
) -> list[Result]:
    """Apply operations in the order given, in one transaction: one Result per delivery, in the
    same order.

    The deliveries may concern any issuers and cards. `checked_live`: they are D1's answer to a
    live query, so the orders also record that D1 was checked (and knows the card) in the same
    write. Inside a caller's transaction they join it (no savepoint: the caller retries the
    whole transaction, see transactions.retried); otherwise they get one of their own, run again
    after a deadlock or serialization failure.
    """
    if not deliveries:
        return []
    return transactions.retried(partial(_apply_locked, deliveries, source, checked_live))


def _apply_locked(
    deliveries: Sequence[Delivery], source: Source, checked_live: bool
) -> list[Result]:
    tracked = [d for d in deliveries if d.operation.operation in lifecycle.TRACKED_OPERATIONS]
    keys = sorted({(d.issuer_id, d.operation.card_id) for d in tracked})
    first_seen = min((d.received_at for d in tracked), default=timezone.now())
    orders = _lock_orders(keys, first_seen)
    # Only the columns that changed are written back: remember the orders as read.
    loaded = {key: [getattr(o, f) for f in _SAVED_FIELDS] for key, o in orders.items()}
    seen = _known_keys(orders.values(), {_dedup_key(d.operation) for d in tracked})
    results: list[Result] = []
    events: list[dict[str, Any]] = []
    limits = attention.thresholds()
    live = source in _LIVE_SOURCES
    for delivery in deliveries:
        op, received_at = delivery.operation, delivery.received_at
        if op.operation not in lifecycle.TRACKED_OPERATIONS:
            results.append(Result(Outcome.IGNORED, None, False))
            continue
        order = orders[(delivery.issuer_id, op.card_id)]
        if checked_live:
            order.last_checked_at, order.unknown_to_d1 = received_at, False
        key = _dedup_key(op)
        duplicate = (order.pk, key) in seen
        if duplicate and not live:
            order.duplicates_received += 1
            results.append(Result(Outcome.DUPLICATE, order.pk, False))
            continue
        before = _state(order)
        # A live answer is D1's state now: even when Tracker already holds the same event, it
        # is applied again, so an order misled by reordered deliveries is put right.
        verdict = _decide(order, op, received_at, authoritative=live)
        order.late_after = sla.late_after(order.due_date, order.due_at, order.production_site)
        changed = _state(order) != before
        if changed:
            attention.state_changed(order, received_at)
        if duplicate:
            order.duplicates_received += 1
        else:
            seen.add((order.pk, key))
            order.last_event_at = max(order.last_event_at or received_at, received_at)
            events.append(_event(order, delivery, key, source, verdict))
        attention.update(order, limits)
        results.append(Result(Outcome.DUPLICATE if duplicate else verdict, order.pk, changed))
    _insert_events(events)
    _write_back(orders, loaded)
    return results


def _batch_size(columns: int) -> int:
    return max(1, _MAX_PARAMETERS // columns)


def _write_back(
    orders: dict[tuple[str, str], CardOrder], loaded: dict[tuple[str, str], list[Any]]
) -> None:
    """Write back the columns that changed, for the orders that changed, in one statement."""
    changed: dict[str, None] = {}
    dirty: list[CardOrder] = []
    for key, order in orders.items():
        fields = [
            f
            for f, before in zip(_SAVED_FIELDS, loaded[key], strict=True)
            if getattr(order, f) != before
        ]
        if fields:
            dirty.append(order)
            changed.update(dict.fromkeys(fields))
    if len(dirty) == 1:
        dirty[0].save(update_fields=list(changed))
    elif dirty and connection.vendor == "postgresql":
        _update_from_values(dirty, list(changed))
    elif dirty:
        # The rows exist and are locked, so this upsert only ever updates; bulk_update() would
        # build a CASE WHEN per field and row.
        CardOrder.objects.bulk_create(
            dirty,
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=list(changed),
            batch_size=_batch_size(len(_ORDER_COLUMNS) + 1),
        )


def _update_from_values(orders: list[CardOrder], names: list[str]) -> None:
    # UPDATE … FROM one JSON document of the changed columns: one parameter however many orders
    # and columns, written by orjson and read by PostgreSQL, with no per-value adaptation.
    fields = [_SAVED_COLUMNS[name] for name in names]
    assignments = ", ".join(f"{_quoted(f)} = v.{_quoted(f)}" for f in fields)
    rows = [{"id": o.pk, **{_column(f): getattr(o, f.attname) for f in fields}} for o in orders]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(CardOrder._meta.db_table)} AS o SET {assignments}"
            f" FROM {_recordset([CardOrder._meta.pk, *fields])} WHERE o.id = v.id",
            [_json(rows)],
        )


def _insert_events(rows: list[dict[str, Any]]) -> None:
    """The new timeline events, in one statement (rows keyed by column name)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        events = [TimelineEvent(**row) for row in rows]
        TimelineEvent.objects.bulk_create(events, batch_size=_batch_size(len(_EVENT_FIELDS)))
        return
    columns = ", ".join(_quoted(f) for f in _EVENT_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(TimelineEvent._meta.db_table)} ({columns})"
            f" SELECT {columns} FROM {_recordset(_EVENT_FIELDS)}",
            [_json(rows)],
        )


def _recordset(fields: Sequence[Field[Any, Any]]) -> str:
    """`jsonb_to_recordset(%s) AS v(…)`: rows from a JSON array of objects keyed by column."""
    typed = ", ".join(f"{_quoted(f)} {f.db_type(connection)}" for f in fields)
    return f"jsonb_to_recordset(%s::jsonb) AS v({typed})"


def _json(rows: list[dict[str, Any]]) -> str:
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        # What orjson does not write (an integer beyond 64 bits, a lone surrogate in a string)
        # the standard library does, as Django's JSONField would.
        return json.dumps(rows, default=_json_default)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _column(field: Field[Any, Any]) -> str:
    assert field.column is not None
    return field.column


_ORDER_COLUMNS = [field for field in CardOrder._meta.concrete_fields if field.name != "id"]
_ISSUER_AT = [field.name for field in _ORDER_COLUMNS].index("issuer_id")
_CARD_AT = [field.name for field in _ORDER_COLUMNS].index("card_id")
_SAVED_COLUMNS = {field.name: field for field in _ORDER_COLUMNS if field.name in _SAVED_FIELDS}
_EVENT_FIELDS = [field for field in TimelineEvent._meta.concrete_fields if field.name != "id"]


def _lock_orders(
    keys: list[tuple[str, str]], first_seen: datetime
) -> dict[tuple[str, str], CardOrder]:
    """Lock (creating as needed) the orders for these (issuer, card) keys, sorted, and read them.

    One upsert takes every lock in the order of its rows: an existing order is locked by the
    DO UPDATE that changes nothing, a new one is inserted. Every writer locks in this one order,
    so two appliers, a live refresh and an administrator's correction can never deadlock.
    """
    if not keys:
        return {}
    # A new order's row is the same for every card but its key: prepared once per call.
    template = _new_order_row("", "", first_seen)
    if connection.vendor == "postgresql":
        _lock_by_arrays(keys, template)
    else:
        _lock_by_values(keys, template)
    by_issuer: dict[str, list[str]] = {}
    for issuer_id, card_id in keys:
        by_issuer.setdefault(issuer_id, []).append(card_id)
    wanted = Q()
    for issuer_id, card_ids in by_issuer.items():
        wanted |= Q(issuer_id=issuer_id, card_id__in=card_ids)
    return {(o.issuer_id, o.card_id): o for o in CardOrder.objects.filter(wanted)}


def _lock_by_arrays(keys: list[tuple[str, str]], template: list[Any]) -> None:
    # The keys as two arrays and the constant columns once: a statement of a few parameters
    # however many cards, taken in the order of the arrays (WITH ORDINALITY … ORDER BY).
    quote = connection.ops.quote_name
    others = [(f, v) for i, (f, v) in enumerate(zip(_ORDER_COLUMNS, template, strict=True))
              if i not in (_ISSUER_AT, _CARD_AT)]  # fmt: skip
    columns = ", ".join(_quoted(f) for f, _ in others)
    values = ", ".join(f"%s::{f.db_type(connection)}" for f, _ in others)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(CardOrder._meta.db_table)} (issuer_id, card_id, {columns})"
            f" SELECT k.issuer_id, k.card_id, {values}"
            " FROM unnest(%s::varchar[], %s::varchar[]) WITH ORDINALITY AS k(issuer_id, card_id, n)"
            " ORDER BY k.n"
            ' ON CONFLICT ("issuer_id", "card_id") DO UPDATE SET "card_id" = EXCLUDED."card_id"'
            " WHERE 1 = 0",
            [*(v for _, v in others), [k[0] for k in keys], [k[1] for k in keys]],
        )


def _quoted(field: Field[Any, Any]) -> str:
    """A concrete field's column name, quoted for raw SQL."""
    assert field.column is not None
    return connection.ops.quote_name(field.column)


def _lock_by_values(keys: list[tuple[str, str]], template: list[Any]) -> None:
    columns = ", ".join(_quoted(field) for field in _ORDER_COLUMNS)
    row = "(" + ", ".join(["%s"] * len(_ORDER_COLUMNS)) + ")"
    table = connection.ops.quote_name(CardOrder._meta.db_table)
    size = _batch_size(len(_ORDER_COLUMNS))
    with connection.cursor() as cursor:
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            params: list[Any] = []
            for issuer_id, card_id in chunk:
                template[_ISSUER_AT], template[_CARD_AT] = issuer_id, card_id
                params += template
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))}"
                ' ON CONFLICT ("issuer_id", "card_id") DO UPDATE SET "card_id" = EXCLUDED."card_id"'
                " WHERE 1 = 0",
                params,
            )


def _new_order_row(issuer_id: str, card_id: str, first_seen: datetime) -> list[Any]:
    order = CardOrder(issuer_id=issuer_id, card_id=card_id, first_seen_at=first_seen)
    return [
        field.get_db_prep_save(field.pre_save(order, add=True), connection)
        for field in _ORDER_COLUMNS
    ]


def _known_keys(orders: Iterable[CardOrder], keys: set[str]) -> set[tuple[int, str]]:
    # An order that never received an event (just created, or registered from CSV) has none
    # to compare with: a body about new cards skips the query.
    heard_of = [order.pk for order in orders if order.last_event_at is not None]
    if not keys or not heard_of:
        return set()
    return set(
        TimelineEvent.objects.filter(order__in=heard_of, content_hash__in=keys).values_list(
            "order_id", "content_hash"
        )
    )


def _dedup_key(op: Operation) -> str:
    return op.state_hash if settings.D1_DEDUP_KEY_MODE == "state_tuple" else op.canonical_hash


def _state(order: CardOrder) -> tuple[Any, ...]:
    return tuple(getattr(order, name) for name in _STATE_FIELDS)


def _decide(order: CardOrder, op: Operation, received_at: datetime, authoritative: bool) -> Outcome:
    """Move the order as far as this operation allows; return the verdict.

    `authoritative` operations come from asking D1 (on demand, reconcile): they describe D1's
    state now, so a carrier status they carry is taken even if it looks like a step back.
    """
    if order.operation_id and op.operation_id != order.operation_id:
        if order.start_time and op.start_time < order.start_time:
            return Outcome.STALE  # a late event of an operation that a re-order replaced
        if order.start_time is None or op.start_time > order.start_time:
            _start_new_operation(order, op)
    if not order.operation_id:
        order.operation_id, order.operation = op.operation_id, op.operation
        order.start_time = op.start_time
    _fill_blanks(order, op)

    status = op.business_status
    if status is None:
        return Outcome.STALE  # no details: nothing in it moves the order
    rank = lifecycle.rank(status)
    if rank is None:
        if settings.D1_UNKNOWN_STATUS_POLICY == "store_and_flag":
            order.unrecognized_status = status
        _alert_once(status, order)
        return Outcome.UNRECOGNIZED
    if lifecycle.conflicts(order.stage, status):
        order.conflict = True
        logger.warning("conflicting terminal states for %s: %s then %s", order, order.stage, status)
        return Outcome.CONFLICT
    same_stage = rank == order.stage_rank and status == order.stage
    if same_stage and not authoritative and _shipment_goes_back(order, op):
        return Outcome.STALE
    if rank > order.stage_rank or same_stage:
        # The same stage again with other content is a carrier update at CARD_SHIPPED, or
        # fields filled in. Any known state arriving supersedes an unrecognized one.
        if not same_stage and order.stage and 10 < rank - order.stage_rank < 100:
            logger.info("%s skipped from %s to %s", order, order.stage, status)
        _take_state(order, op, rank, received_at)
        order.unrecognized_status = ""
        return Outcome.APPLIED
    return Outcome.STALE


def _shipment_goes_back(order: CardOrder, op: Operation) -> bool:
    """A carrier update that would take a delivered (or returned) parcel back on the road.

    D1 sends no time with carrier events, so a reordered older one ("in transit" after
    "delivered") would otherwise win; it is kept as stale, and reconciliation corrects the rest.
    """
    shipment = op.details.shipment if op.details else None
    if shipment is None or not shipment.status:
        return False
    final = (carrier.DELIVERED, carrier.RETURNED)
    return (
        carrier.bucket(order.shipment_status) in final
        and carrier.bucket(shipment.status) not in final
    )


def _start_new_operation(order: CardOrder, op: Operation) -> None:
    logger.info("%s: operation %s replaces %s", order, op.operation_id, order.operation_id)
    fresh = CardOrder(issuer_id=order.issuer_id, card_id=order.card_id)
    for name in (
        _STATE_FIELDS
        + _ATTRIBUTES
        + (
            "stage_rank",
            "terminal",
            "end_time",
            "late_after",
            "shipment_message",
            "tracking_url",
            "shipment",
            "shipment_updated_at",
            "error",
            "reason",
        )
    ):
        setattr(order, name, getattr(fresh, name))
    order.operation_id, order.operation = op.operation_id, op.operation
    order.start_time = op.start_time


def _fill_blanks(order: CardOrder, op: Operation) -> None:
    for name, value in _attributes(op).items():
        if value and not getattr(order, name):
            setattr(order, name, value)
    details = op.details
    if details and details.due_date and order.due_date is None:
        _set_due(order, details.due_date, details.due_at)


def _take_state(order: CardOrder, op: Operation, rank: int, received_at: datetime) -> None:
    details = op.details
    assert details is not None and details.status is not None
    moved = rank != order.stage_rank
    order.stage, order.stage_rank = details.status, rank
    order.terminal = lifecycle.is_terminal(details.status)
    order.operation_status = op.status
    order.operation = op.operation
    if op.end_time or moved:
        order.end_time = op.end_time
    # Errors describe the state they came with: a new stage replaces them, a repeat refreshes.
    for name, value in (
        ("error_code", op.error_code),
        ("error", op.error),
        ("reason", details.reason),
    ):
        if value or moved:
            setattr(order, name, value or "")
    for name, value in _attributes(op).items():
        if value:
            setattr(order, name, value)
    if details.due_date:
        _set_due(order, details.due_date, details.due_at)
    if details.shipment is not None:
        _take_shipment(order, details.shipment, received_at)


def _take_shipment(order: CardOrder, shipment: Shipment, received_at: datetime) -> None:
    before = (order.carrier, order.tracking_number, order.shipment_status, order.shipment_message)
    order.carrier = shipment.carrier or order.carrier
    order.tracking_number = shipment.tracking_number or order.tracking_number
    order.shipment_status = shipment.status or ""
    order.shipment_message = shipment.message or ""
    order.tracking_url = shipment.tracking_url or order.tracking_url
    order.shipment = dict(shipment.raw)
    after = (order.carrier, order.tracking_number, order.shipment_status, order.shipment_message)
    if after != before:
        order.shipment_updated_at = received_at


def _attributes(op: Operation) -> dict[str, str | None]:
    details = op.details
    if details is None:
        return {
            "issuer_request_id": op.issuer_request_id,
            "input_file_name": op.input_file_name,
            "production_site": None,
            "tracking_type": None,
        }
    return {
        "issuer_request_id": op.issuer_request_id or details.issuer_request_id,
        "input_file_name": op.input_file_name or details.input_file_name,
        "production_site": details.production_site,
        "tracking_type": details.tracking_type,
    }


def _set_due(order: CardOrder, due_date: date, due_at: datetime | None) -> None:
    order.due_date, order.due_at = due_date, due_at


def _alert_once(status: str, order: CardOrder) -> None:
    # The cache is shared by every process, so operations hear of each new value once.
    if cache.add(f"tracker:unrecognized-status:{status}", True, timeout=None):
        logger.warning(
            "D1 sent an unrecognized details.status %r (first seen on %s)", status, order
        )


def _event(
    order: CardOrder, delivery: Delivery, key: str, source: Source, verdict: Outcome
) -> dict[str, Any]:
    """A new timeline event as the row to insert, keyed by column (no model is built)."""
    op = delivery.operation
    details = op.details
    shipment = details.shipment if details else None
    return {
        "order_id": order.pk,
        "content_hash": key,
        "source": str(source),
        "verdict": str(verdict),
        "received_at": delivery.received_at,
        "operation_id": op.operation_id,
        "status": op.business_status or "",
        "operation_status": op.status,
        "shipment_status": (shipment and shipment.status) or "",
        "start_time": op.start_time,
        "end_time": op.end_time,
        "raw": dict(op.raw),
        "inbox_id": delivery.inbox_id,
        "user_id": None,
        "note": "",
    }

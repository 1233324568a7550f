"""The one writer of D1 state: every operation object, from any source, enters through apply().

D1 delivers at least once, out of order, and reuses one operationId for every stage of an order,
so applying is idempotent on the content of each operation (REFERENCE §4) and ordered by lifecycle
rank (REFERENCE §3), never by arrival:

- a duplicate (same canonical content) is counted on the order and changes nothing else;
- a higher-ranked known status is applied; a lower one is kept in the timeline as *stale*;
- an unknown status is stored and flagged without touching the stage (*unrecognized*);
- two terminal outcomes that cannot both be true keep the first and flag a *conflict*;
- at CARD_SHIPPED rank, a repeated status refreshes the shipment (carrier updates);
- a newer operation (re-order: another operationId, later startTime) starts the order afresh.

Rows are locked per card (select_for_update) so concurrent deliveries for one card serialize.
"""

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, transaction
from django.utils import timezone

from tracker import attention, sla
from tracker.d1 import lifecycle
from tracker.d1 import shipment as carrier
from tracker.d1.schema import Operation
from tracker.models import CardOrder, InboxItem, Source, TimelineEvent, Verdict

logger = logging.getLogger(__name__)

DUPLICATE = "duplicate"
IGNORED = "ignored"

_DEADLOCK_RETRIES = 5
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


@dataclass(frozen=True)
class Result:
    """What happened to one operation: a Verdict value, DUPLICATE or IGNORED."""

    verdict: str
    order_id: int | None
    changed: bool


def apply(
    issuer_id: str,
    operation: Operation,
    source: Source,
    *,
    inbox: InboxItem | None = None,
    received_at: datetime | None = None,
) -> Result:
    """Apply one operation object to its card order."""
    return apply_many(issuer_id, [operation], source, inbox=inbox, received_at=received_at)[0]


def apply_many(
    issuer_id: str,
    operations: Sequence[Operation],
    source: Source,
    *,
    inbox: InboxItem | None = None,
    received_at: datetime | None = None,
    checked_live: bool = False,
) -> list[Result]:
    """Apply operations in the order given, in one transaction, one result per operation.

    `checked_live`: the operations are D1's answer to a live query, so the orders also record
    that D1 was checked (and knows the card) in the same write.

    Inside a caller's transaction the operations join it (no savepoint: the caller retries the
    whole transaction, see in_retried_transaction); otherwise they get one of their own.
    """
    received_at = received_at or timezone.now()
    apply = partial(_apply_locked, issuer_id, operations, source, inbox, received_at, checked_live)
    if transaction.get_connection().in_atomic_block:
        return apply()
    return in_retried_transaction(apply)


def in_retried_transaction[T](work: Callable[[], T]) -> T:
    """Run `work` in a transaction, from scratch again if PostgreSQL aborts it for a deadlock.

    Two bulk deliveries can lock overlapping cards; PostgreSQL breaks the tie by aborting one,
    which is safe to run again because nothing of it was committed.
    """
    for attempt in range(1, _DEADLOCK_RETRIES + 1):
        try:
            with transaction.atomic():
                return work()
        except OperationalError as e:
            if attempt == _DEADLOCK_RETRIES or not _is_retryable(e):
                raise
            logger.info("ingest retrying after %s (attempt %d)", e.__class__.__name__, attempt)
            # Apart at random, so that the transactions that deadlocked do not meet again in step.
            time.sleep(random.uniform(0, 0.02 * attempt))
    raise AssertionError("unreachable")


def _is_retryable(error: OperationalError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) in {"40P01", "40001"}


def _apply_locked(
    issuer_id: str,
    operations: Sequence[Operation],
    source: Source,
    inbox: InboxItem | None,
    received_at: datetime,
    checked_live: bool,
) -> list[Result]:
    tracked = [op for op in operations if op.operation in lifecycle.TRACKED_OPERATIONS]
    orders = _lock_orders(issuer_id, sorted({op.card_id for op in tracked}), received_at)
    # A single order (most notifications) is written back column by column: remember it as read.
    (single,) = orders.values() if len(orders) == 1 else (None,)
    loaded = {f: getattr(single, f) for f in _SAVED_FIELDS} if single else {}
    seen = _known_keys(orders.values(), {_dedup_key(op) for op in tracked})
    results, events, dirty = [], [], {}
    limits = attention.thresholds()
    for op in operations:
        if op.operation not in lifecycle.TRACKED_OPERATIONS:
            results.append(Result(IGNORED, None, False))
            continue
        order = orders[op.card_id]
        dirty[order.pk] = order
        if checked_live:
            order.last_checked_at, order.unknown_to_d1 = received_at, False
        key = _dedup_key(op)
        duplicate = (order.pk, key) in seen
        live = source in _LIVE_SOURCES
        if duplicate and not live:
            order.duplicates_received += 1
            results.append(Result(DUPLICATE, order.pk, False))
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
            order.last_event_at = received_at
            events.append(_event(order, op, key, source, verdict, inbox, received_at))
        attention.update(order, limits)
        results.append(Result(DUPLICATE if duplicate else verdict, order.pk, changed))
    TimelineEvent.objects.bulk_create(events)
    if single:
        changed_fields = [f for f in _SAVED_FIELDS if getattr(single, f) != loaded[f]]
        if changed_fields:
            single.save(update_fields=changed_fields)
    elif dirty:
        _write_back(list(dirty.values()))
    return results


def _write_back(orders: list[CardOrder]) -> None:
    # The rows exist and are locked, so this upsert only ever updates: one statement, built in
    # linear time. bulk_update() would build a CASE WHEN per field and row (3,500 expressions,
    # about half a second, for a 50-card POST; the budget of issue #4 is 16 ms).
    CardOrder.objects.bulk_create(
        orders, update_conflicts=True, unique_fields=["id"], update_fields=_SAVED_FIELDS
    )


def _lock_orders(issuer_id: str, card_ids: list[str], now: datetime) -> dict[str, CardOrder]:
    """Lock (creating as needed) the orders for these cards, always in card_id order."""
    locked = CardOrder.objects.select_for_update().filter(issuer_id=issuer_id).order_by("card_id")
    orders = {order.card_id: order for order in locked.filter(card_id__in=card_ids)}
    missing = [card_id for card_id in card_ids if card_id not in orders]
    if missing:
        CardOrder.objects.bulk_create(
            [CardOrder(issuer_id=issuer_id, card_id=c, first_seen_at=now) for c in missing],
            ignore_conflicts=True,
        )
        orders.update((order.card_id, order) for order in locked.filter(card_id__in=missing))
    return orders


def _known_keys(orders, keys: set[str]) -> set[tuple[int, str]]:
    # An order that never received an event (just created, or registered from CSV) has none
    # to compare with: a POST about new cards skips the query.
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


def _state(order: CardOrder) -> tuple:
    return tuple(getattr(order, name) for name in _STATE_FIELDS)


def _decide(order: CardOrder, op: Operation, received_at: datetime, authoritative: bool) -> str:
    """Move the order as far as this operation allows; return the verdict.

    `authoritative` operations come from asking D1 (on demand, reconcile): they describe D1's
    state now, so a carrier status they carry is taken even if it looks like a step back.
    """
    if order.operation_id and op.operation_id != order.operation_id:
        if order.start_time and op.start_time < order.start_time:
            return Verdict.STALE  # a late event of an operation that a re-order replaced
        if order.start_time is None or op.start_time > order.start_time:
            _start_new_operation(order, op)
    if not order.operation_id:
        order.operation_id, order.operation = op.operation_id, op.operation
        order.start_time = op.start_time
    _fill_blanks(order, op)

    status = op.business_status
    if status is None:
        return Verdict.STALE  # no details: nothing in it moves the order
    rank = lifecycle.rank(status)
    if rank is None:
        if settings.D1_UNKNOWN_STATUS_POLICY == "store_and_flag":
            order.unrecognized_status = status
        _alert_once(status, order)
        return Verdict.UNRECOGNIZED
    if lifecycle.conflicts(order.stage, status):
        order.conflict = True
        logger.warning("conflicting terminal states for %s: %s then %s", order, order.stage, status)
        return Verdict.CONFLICT
    same_stage = rank == order.stage_rank and status == order.stage
    if same_stage and not authoritative and _shipment_goes_back(order, op):
        return Verdict.STALE
    if rank > order.stage_rank or same_stage:
        # The same stage again with other content is a carrier update at CARD_SHIPPED, or
        # fields filled in. Any known state arriving supersedes an unrecognized one.
        if not same_stage and order.stage and 10 < rank - order.stage_rank < 100:
            logger.info("%s skipped from %s to %s", order, order.stage, status)
        _take_state(order, op, rank, received_at)
        order.unrecognized_status = ""
        return Verdict.APPLIED
    return Verdict.STALE


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


def _take_shipment(order: CardOrder, shipment, received_at: datetime) -> None:
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
    return {
        "issuer_request_id": op.issuer_request_id or (details and details.issuer_request_id),
        "input_file_name": op.input_file_name or (details and details.input_file_name),
        "production_site": details and details.production_site,
        "tracking_type": details and details.tracking_type,
    }


def _set_due(order: CardOrder, due_date, due_at) -> None:
    order.due_date, order.due_at = due_date, due_at


def _alert_once(status: str, order: CardOrder) -> None:
    # The cache is shared by every process, so operations hear of each new value once.
    if cache.add(f"tracker:unrecognized-status:{status}", True, timeout=None):
        logger.warning(
            "D1 sent an unrecognized details.status %r (first seen on %s)", status, order
        )


def _event(
    order: CardOrder,
    op: Operation,
    key: str,
    source: Source,
    verdict: str,
    inbox: InboxItem | None,
    received_at: datetime,
) -> TimelineEvent:
    details = op.details
    shipment = details.shipment if details else None
    return TimelineEvent(
        order=order,
        content_hash=key,
        source=source,
        verdict=verdict,
        received_at=received_at,
        operation_id=op.operation_id,
        status=op.business_status or "",
        operation_status=op.status,
        shipment_status=(shipment and shipment.status) or "",
        start_time=op.start_time,
        end_time=op.end_time,
        raw=dict(op.raw),
        inbox=inbox,
    )

"""Notification bodies: stored verbatim first, parsed and applied later, the same way whichever
door they came in by (the endpoint, `manage.py ingest_notification`, the admin's replay).

store() is the request path's one INSERT; apply_bodies() turns bodies into their operations'
outcomes through the one ingest; record() writes those outcomes back onto the inbox rows.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, partial
from typing import Any

import orjson
from django.db import DatabaseError, connection
from django.utils import timezone

from tracker import ingest, pan, transactions
from tracker.d1.schema import BadPayload, Operation, parse_body, parse_operations
from tracker.models import InboxItem, Outcome, Source

logger = logging.getLogger(__name__)

WAKE_CHANNEL = "tracker_inbox"
# A web process wakes the appliers (PostgreSQL NOTIFY) at most this often: each NOTIFY
# serializes commits on the notification queue, and an applier that is awake re-reads the inbox
# after every batch anyway.
_WAKE_EVERY = 0.05  # seconds
_COUNT_COLUMNS = [o.value for o in Outcome]
_OUTCOME_FIELDS = ["outcome", "error", "results", "processed_at", *_COUNT_COLUMNS]


@dataclass
class Report:
    """What became of one body: an error for the whole body, or one entry per operation."""

    error: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> Counter[Outcome]:
        return Counter(Outcome(entry.get("verdict", Outcome.QUARANTINED)) for entry in self.results)

    @property
    def outcome(self) -> InboxItem.Outcome:
        if self.error:
            return InboxItem.Outcome.REJECTED
        if self.counts[Outcome.QUARANTINED]:
            return InboxItem.Outcome.PARTIAL
        return InboxItem.Outcome.PROCESSED


# --- Storing: the request path ------------------------------------------------------------


class _Wake:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < _WAKE_EVERY:
                return False
            self._last = now
            return True


_wake = _Wake()


def store(issuer_id: str, body: bytes, headers: Mapping[str, str], *, error: str = "") -> int:
    """Save the body, in one INSERT committed on its own; return its id.

    `error`: the body can never succeed; it is kept, already marked rejected. Otherwise it waits
    for an applier. No model is built and no transaction opened: this is the request path's one
    statement (≤ 1 ms of Python per POST), with what every new body has in common written into
    the statement and six parameters. On PostgreSQL the same statement wakes the appliers.
    """
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params = [
        issuer_id,
        now,
        # Masked before it is kept: a card number sent by mistake is never stored.
        pan.mask_body(body),
        orjson.dumps({name: pan.mask_pans(value) for name, value in headers.items()}).decode(),
        pan.mask_pans(error),
        now if error else None,
    ]
    wake = connection.vendor == "postgresql" and not error and _wake.due()
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection.vendor, wake, rejected=bool(error)), params)
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@lru_cache(maxsize=8)
def _insert_sql(vendor: str, wake: bool, rejected: bool) -> str:
    quote = connection.ops.quote_name
    outcome = InboxItem.Outcome.REJECTED if rejected else InboxItem.Outcome.RECEIVED
    json_value = "%s::jsonb" if vendor == "postgresql" else "%s"
    values = {
        "issuer_id": "%s",
        "received_at": "%s",
        "body": "%s",
        "headers": json_value,
        "error": "%s",
        "processed_at": "%s",
        "outcome": f"'{outcome.value}'",
        "results": "'[]'",
        **{counter: "0" for counter in _COUNT_COLUMNS},
    }
    columns = ", ".join(quote(name) for name in values)
    insert = (
        f"INSERT INTO {quote(InboxItem._meta.db_table)} ({columns})"
        f" VALUES ({', '.join(values.values())}) RETURNING {quote('id')}"
    )
    if not wake:
        return insert
    # The notification is delivered when the INSERT commits, in the same round trip.
    return f"WITH stored AS ({insert}) SELECT id, pg_notify('{WAKE_CHANNEL}', '') FROM stored"


# --- Applying: the applier, the command, the replay ---------------------------------------


def apply_bodies(items: Sequence[InboxItem], source: Source) -> dict[int, Report]:
    """Apply the bodies' operations, in the order given, through one ingest call; one Report per
    item id. A body that can never succeed gets an error, a bad item is quarantined on its own."""
    reports: dict[int, Report] = {}
    deliveries: list[ingest.Delivery] = []
    entries: list[tuple[dict[str, Any], Operation]] = []
    for item in items:
        report = reports[item.pk] = Report()
        try:
            parsed = list(parse_operations(parse_body(bytes(item.body))))
        except BadPayload as e:
            logger.error("inbox %s rejected: %s", item.pk, e)
            report.error = str(e)
            continue
        for index, operation in parsed:
            if isinstance(operation, BadPayload):
                logger.warning("inbox %s: operation %d quarantined: %s", item.pk, index, operation)
                report.results.append(
                    {"index": index, "field": operation.field, "error": str(operation)}
                )
                continue
            entry = {
                "index": index,
                "cardId": operation.card_id,
                "operationId": operation.operation_id,
                "status": operation.business_status,
            }
            report.results.append(entry)
            entries.append((entry, operation))
            deliveries.append(ingest.Delivery(item.issuer_id, operation, item.received_at, item.pk))
    results = ingest.apply_many(deliveries, source)
    for (entry, _), result in zip(entries, results, strict=True):
        entry["verdict"] = str(result.verdict)
    return reports


def record(items: Sequence[InboxItem], reports: Mapping[int, Report], at: datetime) -> None:
    """Write each body's outcome onto its row (never the body: it can be megabytes)."""
    for item in items:
        report = reports[item.pk]
        counts = report.counts
        item.outcome = report.outcome
        item.error = report.error
        item.results = report.results
        item.processed_at = at
        for outcome in Outcome:
            setattr(item, outcome.value, counts[outcome])
    if len(items) == 1:
        items[0].save(update_fields=_OUTCOME_FIELDS)
    elif items and connection.vendor == "postgresql":
        _record_all(items, at)
    elif items:
        InboxItem.objects.bulk_update(items, _OUTCOME_FIELDS)


def _record_all(items: Sequence[InboxItem], at: datetime) -> None:
    # One UPDATE … FROM (VALUES …) for the whole batch: bulk_update() would build a CASE WHEN per
    # field and row.
    row = "(" + ", ".join(["%s"] * (4 + len(_COUNT_COLUMNS))) + ")"
    params: list[Any] = []
    for item in items:
        params += [item.pk, item.outcome, item.error, orjson.dumps(item.results).decode()]
        params += [getattr(item, name) for name in _COUNT_COLUMNS]
    counts = ", ".join(f"{name} = v.{name}::integer" for name in _COUNT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {InboxItem._meta.db_table} AS i SET outcome = v.outcome, error = v.error,"
            f" results = v.results::jsonb, processed_at = %s, {counts}"
            f" FROM (VALUES {', '.join([row] * len(items))})"
            f" AS v(id, outcome, error, results, {', '.join(_COUNT_COLUMNS)})"
            " WHERE i.id = v.id::bigint",
            [at, *params],
        )


def process(pk: int) -> Report:
    """Apply one stored body now, synchronously (`manage.py ingest_notification`), unless an
    applier already has: then its recorded report."""
    return transactions.retried(partial(_process_locked, pk))


def _process_locked(pk: int) -> Report:
    item = InboxItem.objects.select_for_update().get(pk=pk)
    if item.outcome not in (InboxItem.Outcome.RECEIVED, InboxItem.Outcome.FAILED):
        return Report(error=item.error, results=list(item.results))
    report = apply_bodies([item], Source.NOTIFICATION)[item.pk]
    record([item], {item.pk: report}, timezone.now())
    return report


def replay(item: InboxItem) -> Report:
    """Apply a stored body again (source `replay`); idempotent, the item's own record is kept."""
    return apply_bodies([item], Source.REPLAY)[item.pk]


def mark_failed(pk: int, error: Exception) -> None:
    """Record that a body failed on its own for a reason that is not its content (a bug, a
    constraint): it leaves the queue, and the inbox admin shows it for a replay; best effort."""
    first_line = next(iter(str(error).splitlines()), "")
    try:
        InboxItem.objects.filter(pk=pk).update(
            outcome=InboxItem.Outcome.FAILED,
            error=pan.mask_pans(f"{error.__class__.__name__}: {first_line}")[:500],
            processed_at=timezone.now(),
        )
    except DatabaseError as e:
        logger.warning("inbox %s could not be marked failed: %s", pk, e.__class__.__name__)


def quick_check(body: bytes) -> str:
    """Why the body can never succeed ("" when it may): the request path's parse, with orjson.
    Only a body orjson refuses or finds wrong is read again by parse_body, which has the last
    word (it takes NaN, and names the problem)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("operations"), list):
        return ""
    try:
        parse_body(body)
    except BadPayload as e:
        return str(e)
    return ""

"""Retention: what `manage.py purge` removes, per kind of data, each with its own age.

- inbox_bodies: the body and headers of notifications processed (or rejected, or failed); the
  row stays: issuer, times, outcome, counts per verdict (the delivery health).
- event_raw: the raw operation JSON of timeline events; the event's facts stay (status, times,
  source, verdict, shipment status): everything the card page and `card_status --json` show.
- lookup_audit: single reads become one LookupAuditDay row per day, user, card, action and
  outcome, with the count and the first and last time: access reviews lose nothing but seconds.
- task_results: finished task results (waiting and running tasks stay).
- sweeps: sweep records (what they repaired stays in the orders' timelines).
- alerts: resolved alerts and their history (open alerts stay).
- terminal_orders (off unless set): finished orders nothing was heard of since the age, with
  their timeline, acknowledgements and corrections, optionally written to an archive file first;
  the lookup audit of those cards stays.

Each kind walks its table in primary-key ranges of TRACKER_PURGE_BATCH, one short transaction per
range: at 1,000,000 orders no statement holds a lock for long, the work can stop and resume at
any point, and a range costs one index range scan whatever the size of the table.
"""

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Max, Min, Q
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tracker import serialize
from tracker.models import (
    Acknowledgement,
    Alert,
    CardOrder,
    InboxItem,
    LookupAudit,
    LookupAuditDay,
    Sweep,
    SweepClaim,
    TimelineEvent,
)

logger = logging.getLogger(__name__)

# Finished orders first: their events leave with them (raw JSON included, into the archive).
KINDS = (
    "terminal_orders",
    "inbox_bodies",
    "event_raw",
    "lookup_audit",
    "task_results",
    "sweeps",
    "alerts",
)
_AGE_SETTINGS = {
    "inbox_bodies": "TRACKER_RETAIN_INBOX_BODIES",
    "event_raw": "TRACKER_RETAIN_EVENT_RAW",
    "lookup_audit": "TRACKER_RETAIN_LOOKUP_AUDIT",
    "task_results": "TRACKER_RETAIN_TASK_RESULTS",
    "sweeps": "TRACKER_RETAIN_SWEEPS",
    "alerts": "TRACKER_RETAIN_ALERTS",
    "terminal_orders": "TRACKER_RETAIN_TERMINAL_ORDERS",
}


def age(kind: str) -> int:
    """Seconds this kind of data is kept (0: forever)."""
    return getattr(settings, _AGE_SETTINGS[kind])


@dataclass
class Purged:
    kind: str
    rows: int
    cutoff: datetime | None


def purge(
    kinds: tuple[str, ...] = KINDS,
    *,
    now: datetime | None = None,
    batch: int | None = None,
    archive: IO[str] | None = None,
) -> list[Purged]:
    """Apply every kind's retention once; return how many rows each touched."""
    now = now or timezone.now()
    batch = batch or settings.TRACKER_PURGE_BATCH
    done = []
    for kind in kinds:
        seconds = age(kind)
        if not seconds:
            done.append(Purged(kind, 0, None))
            continue
        cutoff = now - timedelta(seconds=seconds)
        if kind == "terminal_orders":
            rows = _terminal_orders(cutoff, batch, archive)
        else:
            rows = _PURGERS[kind](cutoff, batch)
        logger.info("purge %s older than %s: %d rows", kind, cutoff.isoformat(), rows)
        done.append(Purged(kind, rows, cutoff))
    return done


def _ranges(model: type[models.Model], batch: int, scope: Q | None = None) -> Iterator[Q]:
    """Primary-key ranges of `batch` ids covering the rows in scope, lowest first."""
    rows = model._default_manager.all()
    if scope is not None:
        rows = rows.filter(scope)
    bounds = rows.aggregate(low=Min("pk"), high=Max("pk"))
    if bounds["low"] is None:
        return
    start = bounds["low"]
    while start <= bounds["high"]:
        yield Q(pk__gte=start, pk__lt=start + batch)
        start += batch


def _in_batches(
    model: type[models.Model], batch: int, work: Callable[[Q], int], scope: Q | None = None
) -> int:
    total = 0
    for id_range in _ranges(model, batch, scope):
        with transaction.atomic():
            total += work(id_range)
    return total


def _inbox_bodies(cutoff: datetime, batch: int) -> int:
    def empty(id_range: Q) -> int:
        return (
            InboxItem.objects.filter(id_range, received_at__lt=cutoff)
            .exclude(outcome=InboxItem.Outcome.RECEIVED)
            .exclude(body=b"")
            .update(body=b"", headers={})
        )

    return _in_batches(InboxItem, batch, empty)


def _event_raw(cutoff: datetime, batch: int) -> int:
    def drop(id_range: Q) -> int:
        return TimelineEvent.objects.filter(
            id_range, received_at__lt=cutoff, raw__isnull=False
        ).update(raw=None)

    return _in_batches(TimelineEvent, batch, drop)


_DAY_KEY = ("day", "username", "issuer_id", "card_id", "action", "outcome")


def _lookup_audit(cutoff: datetime, batch: int) -> int:
    def aggregate(id_range: Q) -> int:
        rows = LookupAudit.objects.filter(id_range, at__lt=cutoff)
        groups: dict[tuple, list] = defaultdict(lambda: [0, None, None])
        for username, issuer_id, card_id, action, outcome, at in rows.values_list(
            "username", "issuer_id", "card_id", "action", "outcome", "at"
        ):
            group = groups[(at.date(), username, issuer_id, card_id, action, outcome)]
            group[0] += 1
            group[1] = at if group[1] is None else min(group[1], at)
            group[2] = at if group[2] is None else max(group[2], at)
        if not groups:
            return 0
        _add_days(groups)
        return rows.delete()[0]

    return _in_batches(LookupAudit, batch, aggregate)


def _add_days(groups: dict[tuple, list]) -> None:
    """Add the counts to the day rows (an upsert, so a day split over batches adds up)."""
    table = LookupAuditDay._meta.db_table
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    columns = ", ".join(_DAY_KEY)
    sql = (
        f"INSERT INTO {table} ({columns}, count, first_at, last_at)"
        f" VALUES ({', '.join(['%s'] * (len(_DAY_KEY) + 3))})"
        f" ON CONFLICT ({columns}) DO UPDATE SET"
        f" count = {table}.count + excluded.count,"
        f" first_at = {least}({table}.first_at, excluded.first_at),"
        f" last_at = {greatest}({table}.last_at, excluded.last_at)"
    )
    params = [
        [
            _db_value("day", key[0]),
            *key[1:],
            count,
            _db_value("first_at", first),
            _db_value("last_at", last),
        ]
        for key, (count, first, last) in groups.items()
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _task_results(cutoff: datetime, batch: int) -> int:
    finished = DBTaskResult.objects.filter(
        status__in=[TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED], finished_at__lt=cutoff
    )
    total = 0
    while True:
        # UUID keys have no useful ranges: take a batch of keys, delete them, repeat.
        keys = list(finished.values_list("pk", flat=True)[:batch])
        if not keys:
            return total
        total += DBTaskResult.objects.filter(pk__in=keys).delete()[0]


def _sweeps(cutoff: datetime, batch: int) -> int:
    def drop(id_range: Q) -> int:
        old = Sweep.objects.filter(id_range, finished_at__lt=cutoff)
        return old.delete()[1].get("tracker.Sweep", 0)

    return _in_batches(Sweep, batch, drop)


def _alerts(cutoff: datetime, batch: int) -> int:
    def drop(id_range: Q) -> int:
        return (
            Alert.objects.filter(id_range, resolved_at__lt=cutoff)
            .delete()[1]
            .get("tracker.Alert", 0)
        )

    return _in_batches(Alert, batch, drop)


def _old_terminal(cutoff: datetime) -> Q:
    """Finished, and nothing heard of or checked since the cutoff."""
    return (
        Q(terminal=True, first_seen_at__lt=cutoff)
        & (Q(last_event_at__isnull=True) | Q(last_event_at__lt=cutoff))
        & (Q(last_checked_at__isnull=True) | Q(last_checked_at__lt=cutoff))
        & (Q(state_changed_at__isnull=True) | Q(state_changed_at__lt=cutoff))
    )


def _terminal_orders(cutoff: datetime, batch: int, archive: IO[str] | None) -> int:
    history = CardOrder.history.model

    def drop(id_range: Q) -> int:
        orders = CardOrder.objects.filter(id_range).filter(_old_terminal(cutoff))
        if archive is not None:
            orders = orders.select_for_update()
            for order in orders.prefetch_related("events"):
                events = sorted(order.events.all(), key=lambda e: (e.received_at, e.id))
                archive.write(json.dumps(serialize.order_json(order, events)) + "\n")
        ids = list(orders.values_list("pk", flat=True))
        if not ids:
            return 0
        TimelineEvent.objects.filter(order_id__in=ids).delete()
        Acknowledgement.objects.filter(order_id__in=ids).delete()
        SweepClaim.objects.filter(order_id__in=ids).delete()
        history.objects.filter(id__in=ids).delete()
        # One DELETE, not Model.delete(): the correction history would record each removal as
        # a new row, one INSERT per order (its dependents are gone already).
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {CardOrder._meta.db_table}"
                f" WHERE id IN ({', '.join(['%s'] * len(ids))})",
                ids,
            )
            return cursor.rowcount

    return _in_batches(CardOrder, batch, drop)


def open_archive(path: str) -> IO[str]:
    """The archive file, appended to (JSON Lines, one order with its timeline per line)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.open("a", encoding="utf-8")


_PURGERS: dict[str, Callable[[datetime, int], int]] = {
    "inbox_bodies": _inbox_bodies,
    "event_raw": _event_raw,
    "lookup_audit": _lookup_audit,
    "task_results": _task_results,
    "sweeps": _sweeps,
    "alerts": _alerts,
}


def _db_value(name: str, value: Any) -> Any:
    """A value of one of LookupAuditDay's concrete fields, as the database takes it."""
    field = LookupAuditDay._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field.get_db_prep_value(value, connection)

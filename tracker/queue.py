"""The supervisors' work queue: which orders need attention, at a glance, and what was done.

Reads are bounded (keyset pages of PAGE_SIZE, aggregates cached for OVERVIEW_TTL); writes are the
supervisors' own acknowledgements and snoozes, which hold until the order's state changes.
"""

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, F, Prefetch, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from tracker import attention, tasks
from tracker.attention import Reason
from tracker.d1 import lifecycle
from tracker.models import Acknowledgement, CardOrder, RecheckBatch, Source

PAGE_SIZE = 50
OVERVIEW_TTL = 30  # seconds; the overview is a trend, the table is always fresh
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)  # an acknowledgement has no end of its own

# Age = time since the order's last event (or since it was registered, if none).
AGE_BUCKETS = (
    ("0-1", 0, 1),
    ("1-2", 1, 2),
    ("2-3", 2, 3),
    ("3-7", 3, 7),
    ("7+", 7, None),
)
SORTS = {
    "attention": ("attention_since", False),  # (field, nulls first)
    "due": ("late_after", False),
    "silence": ("last_event_at", True),
    "card": ("card_id", False),
}
# What a row shows and what its reasons are computed from (attention.reasons); fetching only
# these keeps a page of 50 orders cheap to load.
_ROW_FIELDS = (
    "issuer_id", "card_id", "stage", "terminal", "operation_status", "unrecognized_status",
    "conflict", "shipment_status", "due_date", "due_at", "late_after", "silent_after",
    "attention_since", "last_event_at", "production_site", "muted_until",
)  # fmt: skip


@dataclass(frozen=True)
class Filters:
    issuer: str = ""
    site: str = ""
    stage: str = ""
    reason: str = ""
    age: str = ""
    show: str = "open"
    sort: str = "attention"
    descending: bool = False

    def as_query(self, **changes: Any) -> dict[str, str]:
        """The URL parameters of this filter (for links that keep it), minus defaults."""
        values = {**self.__dict__, **changes}
        values["dir"] = "desc" if values.pop("descending") else ""
        defaults = {"show": "open", "sort": "attention"}
        return {k: str(v) for k, v in values.items() if v and defaults.get(k) != v}


@dataclass
class Row:
    order: CardOrder
    reasons: list[Reason]
    acknowledgement: Acknowledgement | None


@dataclass
class Page:
    rows: list[Row]
    next_cursor: str | None
    now: datetime = field(default_factory=timezone.now)


def wake_snoozed(now: datetime | None = None) -> int:
    """End the snoozes whose date has come, so the queue's indexes see those orders again."""
    return CardOrder.objects.filter(muted_until__lte=now or timezone.now()).update(muted_until=None)


def orders(filters: Filters, *, cursor: str = "", now: datetime | None = None) -> Page:
    """One page of the queue under these filters, with every reason of each order."""
    now = now or timezone.now()
    wake_snoozed(now)
    orders = list(
        _keyset(_filtered(filters, now), filters, cursor)
        .only(*_ROW_FIELDS)
        .prefetch_related(
            Prefetch(
                "acknowledgements",
                queryset=Acknowledgement.objects.select_related("user").order_by("-created_at"),
            )
        )[: PAGE_SIZE + 1]
    )
    more = len(orders) > PAGE_SIZE
    orders = orders[:PAGE_SIZE]
    rows = [
        Row(order, attention.reasons(order, now), next(iter(order.acknowledgements.all()), None))
        for order in orders
    ]
    next_cursor = _cursor(orders[-1], filters) if more else None
    return Page(rows, next_cursor, now)


def matching(filters: Filters, now: datetime | None = None) -> QuerySet[CardOrder]:
    """Every order under these filters, in their sort order."""
    now = now or timezone.now()
    wake_snoozed(now)
    return _ordered(_filtered(filters, now), filters)


def export_rows(filters: Filters, now: datetime | None = None) -> Iterator[CardOrder]:
    """Every order under these filters, streamed in chunks (memory stays flat)."""
    return matching(filters, now).iterator(chunk_size=2000)


def overview(now: datetime | None = None) -> dict[str, Any]:
    """Counts by reason and stage, the ageing histogram and the stage funnel (cached briefly)."""
    cached = cache.get("tracker:queue-overview")
    if cached is not None:
        return cached
    now = now or timezone.now()
    wake_snoozed(now)
    queue = CardOrder.objects.filter(attention.needs_attention(now))
    # One pass over the queue for the reasons and the ages together.
    counts = queue.annotate(since=Coalesce("last_event_at", "first_seen_at")).aggregate(
        total=Count("id"),
        **{
            reason.value: Count("id", filter=attention.reason_filter(reason, now))
            for reason in Reason
        },
        **{
            f"age_{i}": Count("id", filter=_age_filter(name, now, "since"))
            for i, (name, *_) in enumerate(AGE_BUCKETS)
        },
    )
    ages = {name: counts.pop(f"age_{i}") for i, (name, *_) in enumerate(AGE_BUCKETS)}
    reasons = counts
    needing_by_stage = dict(queue.values_list("stage").annotate(n=Count("id")).order_by())
    open_by_stage = dict(
        CardOrder.objects.filter(terminal=False)
        .values_list("stage")
        .annotate(n=Count("id"))
        .order_by()
    )
    result = {
        "as_of": now,
        "total": reasons.pop("total"),
        "reasons": reasons,
        "ages": ages,
        "stages": needing_by_stage,
        "funnel": [
            (stage, open_by_stage.get(stage, 0), needing_by_stage.get(stage, 0))
            for stage in lifecycle.PROGRESS[:-1]
        ],
    }
    cache.set("tracker:queue-overview", result, OVERVIEW_TTL)
    return result


def acknowledge(order: CardOrder, user, note: str) -> Acknowledgement:
    """Take the order out of the default view until its state changes."""
    return _mute(order, user, Acknowledgement.Kind.ACKNOWLEDGE, FOREVER, note)


def snooze(order: CardOrder, user, until: datetime, note: str) -> Acknowledgement:
    """Take the order out of the default view until `until` or a change of state."""
    return _mute(order, user, Acknowledgement.Kind.SNOOZE, until, note)


def reopen(order: CardOrder, user, note: str = "") -> Acknowledgement:
    """Put an acknowledged or snoozed order back in the default view."""
    return _mute(order, user, Acknowledgement.Kind.REOPEN, None, note)


def start_recheck(orders: QuerySet[CardOrder], user, limit: int) -> RecheckBatch:
    """Enqueue one refresh task per order (at most `limit`), counted in a new batch."""
    keys = list(orders.values_list("issuer_id", "card_id")[:limit])
    with transaction.atomic():
        batch = RecheckBatch.objects.create(created_by=user, total=len(keys))
        for issuer_id, card_id in keys:
            transaction.on_commit(
                partial(
                    tasks.refresh_card.enqueue,
                    issuer_id=issuer_id,
                    card_id=card_id,
                    source=Source.ON_DEMAND,
                    batch_id=batch.pk,
                )
            )
    return batch


def _mute(order: CardOrder, user, kind: str, until: datetime | None, note: str) -> Acknowledgement:
    with transaction.atomic():
        # The UPDATE takes the row lock the ingest takes, so a state change is never lost to it.
        CardOrder.objects.filter(pk=order.pk).update(muted_until=until)
        order.muted_until = until
        return Acknowledgement.objects.create(
            order=order, user=user, kind=kind, until=None if until == FOREVER else until, note=note
        )


def _filtered(filters: Filters, now: datetime) -> QuerySet[CardOrder]:
    orders = CardOrder.objects.filter(attention_since__lte=now)
    if filters.show == "open":
        orders = orders.filter(muted_until__isnull=True)
    elif filters.show == "muted":
        orders = orders.filter(muted_until__isnull=False)
    if filters.issuer:
        orders = orders.filter(issuer_id=filters.issuer)
    if filters.site:
        orders = orders.filter(production_site=filters.site)
    if filters.stage:
        orders = orders.filter(stage="" if filters.stage == "none" else filters.stage)
    if filters.reason:
        orders = orders.filter(attention.reason_filter(filters.reason, now))
    if filters.age:
        orders = orders.annotate(since=Coalesce("last_event_at", "first_seen_at")).filter(
            _age_filter(filters.age, now, "since")
        )
    return orders


def _age_filter(name: str, now: datetime, column: str) -> Q:
    _, low, high = next(bucket for bucket in AGE_BUCKETS if bucket[0] == name)
    condition = Q(**{f"{column}__lte": now - timedelta(days=low)})
    if high is not None:
        condition &= Q(**{f"{column}__gt": now - timedelta(days=high)})
    return condition


def _ordered(orders: QuerySet[CardOrder], filters: Filters) -> QuerySet[CardOrder]:
    column, nulls_first = SORTS[filters.sort]
    expression = F(column).desc() if filters.descending else F(column).asc()
    if nulls_first != filters.descending:
        expression.nulls_first = True
    else:
        expression.nulls_last = True
    return orders.order_by(expression, "-id" if filters.descending else "id")


def _keyset(orders: QuerySet[CardOrder], filters: Filters, cursor: str) -> QuerySet[CardOrder]:
    """Rows after the cursor in the sort order; a bad cursor starts from the top."""
    orders = _ordered(orders, filters)
    column, nulls_first = SORTS[filters.sort]
    position = _decode(cursor, parse_time=column != "card_id")
    if position is None:
        return orders
    value, pk = position
    after = "lt" if filters.descending else "gt"
    nulls_come_first = nulls_first != filters.descending
    same = Q(**{f"id__{after}": pk})
    if value is None:
        condition = Q(**{f"{column}__isnull": True}) & same
        if nulls_come_first:
            condition |= Q(**{f"{column}__isnull": False})
    else:
        condition = Q(**{f"{column}__{after}": value}) | (Q(**{column: value}) & same)
        if not nulls_come_first:
            condition |= Q(**{f"{column}__isnull": True})
    return orders.filter(condition)


def _cursor(order: CardOrder, filters: Filters) -> str:
    column, _ = SORTS[filters.sort]
    value = getattr(order, column)
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([value, order.pk]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, *, parse_time: bool) -> tuple[Any, int] | None:
    """The (value, id) a cursor points after; None for no cursor or one that was tampered with."""
    if not cursor or len(cursor) > 200:
        return None
    try:
        value, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(pk, int) or not (value is None or isinstance(value, str)):
            return None
        if value is not None and parse_time:
            value = datetime.fromisoformat(value)
        return value, pk
    except (ValueError, TypeError):
        return None

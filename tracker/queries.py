"""Reads the pages need. Writes go through tracker/ingest.py, never through here.

Each read is bounded and served by an index (models.py), so a page costs the same with ten
orders or ten million: no COUNT(*), no sort over a whole table, a fixed number of queries.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Field, Max, Q, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT
from django.utils import timezone

from tracker.models import AuthFailureCount, CardOrder, InboxItem, Outcome, TimelineEvent

SEARCH_LIMIT = 50
# The admin site's order search: enough to act on a whole input file, still one bounded scan.
ADMIN_SEARCH_LIMIT = 1000
# Far above any real card (a few production stages and carrier updates); it only keeps a
# runaway timeline from making the page slow.
TIMELINE_LIMIT = 500

# The keys an agent may have for a card; each has a varchar_pattern_ops index (= and prefix).
SEARCH_FIELDS = (
    "card_id",
    "issuer_request_id",
    "operation_id",
    "tracking_number",
    "input_file_name",
    "customer_reference",
)
_LISTED_FIELDS = (
    "issuer_id",
    *SEARCH_FIELDS,
    "stage",
    "terminal",
    "unrecognized_status",
    "conflict",
    "late_after",
    "last_event_at",
)
_LONGEST_KEY = 255


@dataclass(frozen=True)
class Hit:
    order: CardOrder
    matched_field: str  # the SEARCH_FIELDS entry that matched
    matched_value: str

    @property
    def matched_label(self) -> str:
        return str(_field(self.matched_field).verbose_name)


@dataclass(frozen=True)
class CardSearch:
    hits: list[Hit]
    more: bool  # more than SEARCH_LIMIT orders matched; the agent should refine the query
    exact: bool  # the hits equal the query (otherwise they start with it)


@dataclass(frozen=True)
class CardDetail:
    order: CardOrder
    events: list[TimelineEvent]  # newest first
    older_events_hidden: bool


def find_cards(q: str, limit: int = SEARCH_LIMIT) -> CardSearch:
    """Orders with an identifier equal to q, or else starting with q; two queries at most."""
    if not q or len(q) > _LONGEST_KEY:
        return CardSearch([], False, False)
    for exact in (True, False):
        matches = _matching(q, exact, limit + 1).only(*_LISTED_FIELDS)
        orders = list(matches.order_by("card_id", "issuer_id")[: limit + 1])
        if orders:
            hits = [_hit(order, q) for order in orders[:limit]]
            return CardSearch(hits, len(orders) > limit, exact)
    return CardSearch([], False, False)


def matching_orders(q: str, per_key: int = ADMIN_SEARCH_LIMIT) -> QuerySet[CardOrder]:
    """Orders with an identifier equal to q, or else starting with q; at most per_key a key."""
    if not q or len(q) > _LONGEST_KEY:
        return CardOrder.objects.none()
    exact = _matching(q, True, per_key)
    return exact if exact.exists() else _matching(q, False, per_key)


def _matching(q: str, exact: bool, per_key: int) -> QuerySet[CardOrder]:
    if connection.vendor != "postgresql":
        lookup = "exact" if exact else "startswith"
        return CardOrder.objects.filter(
            reduce(or_, (Q(**{f"{field}__{lookup}": q}) for field in SEARCH_FIELDS))
        )
    # Asked for a common value (a big input file) or a broad prefix, PostgreSQL expects many
    # rows and picks a sequential scan that stops at the first matches, which reads the whole
    # table when they sit at its end (recent cards). LIKE ordered by the pattern_ops operator
    # makes each key an index range scan that stops after `per_key` rows, whatever the data.
    pattern = connection.ops.prep_for_like_query(q) + ("" if exact else "%")
    quote = connection.ops.quote_name
    table, pk = quote(CardOrder._meta.db_table), quote(_column("id"))
    branches = []
    for field in SEARCH_FIELDS:
        column = quote(_column(field))
        branches.append(
            f"(SELECT {pk} FROM {table} WHERE {column} LIKE %s"
            f" ORDER BY {column} USING ~<~ LIMIT {int(per_key)})"
        )
    return CardOrder.objects.filter(
        pk__in=RawSQL(" UNION ALL ".join(branches), [pattern] * len(branches))
    )


def _field(name: str) -> Field[Any, Any]:
    field = CardOrder._meta.get_field(name)
    assert isinstance(field, Field), name  # a column of the order, never a reverse relation
    return field


def _column(name: str) -> str:
    column = _field(name).column
    assert column, name
    return column


def _hit(order: CardOrder, q: str) -> Hit:
    values = [(field, getattr(order, field)) for field in SEARCH_FIELDS]
    # SQLite's LIKE ignores case, PostgreSQL's does not: try the strictest match first.
    strictest_first: tuple[Callable[[str], bool], ...] = (
        lambda value: value == q,
        lambda value: value.startswith(q),
        lambda value: value.casefold().startswith(q.casefold()),
    )
    for matches in strictest_first:
        for field, value in values:
            if matches(value):
                return Hit(order, field, value)
    return Hit(order, "card_id", order.card_id)


def card_detail(issuer_id: str, card_id: str) -> CardDetail | None:
    """One order and its timeline, newest event first, in two queries; None if unknown."""
    try:
        order = CardOrder.objects.get(issuer_id=issuer_id, card_id=card_id)
    except CardOrder.DoesNotExist:
        return None
    events: list[TimelineEvent] = list(
        order.events.select_related("user")
        .defer("raw", "content_hash")
        # Only what the timeline shows of each operation object, not the whole JSON.
        .annotate(
            shipment_message=KT("raw__details__shipment__message"),
            error_code=KT("raw__errorCode"),
            error=KT("raw__error"),
            reason=KT("raw__details__reason"),
        )
        .order_by("-received_at", "-id")[: TIMELINE_LIMIT + 1]
    )
    return CardDetail(order, events[:TIMELINE_LIMIT], len(events) > TIMELINE_LIMIT)


HEALTH_WINDOW = timedelta(hours=24)
# Operations counted per verdict; each InboxItem holds its own counts (tracker/inbox.py).
# Operations by outcome, as the inbox counts them (operations outside card tracking left out).
OPERATION_COUNTS = tuple(o.value for o in Outcome if o is not Outcome.IGNORED)


@dataclass(frozen=True)
class IssuerHealth:
    """One issuer's deliveries: operations by verdict, bodies by outcome, over HEALTH_WINDOW."""

    issuer_id: str
    last_received_at: datetime | None
    notifications: int = 0
    applied: int = 0
    duplicate: int = 0
    stale: int = 0
    unrecognized: int = 0
    conflict: int = 0
    quarantined: int = 0
    rejected: int = 0  # bodies answered 400 (not JSON, no operations list)
    failed: int = 0  # bodies the applier could not apply (the inbox admin replays them)
    auth_failures: int = 0


@dataclass(frozen=True)
class DeliveryHealth:
    since: datetime
    issuers: list[IssuerHealth]
    token_auth_failures: int


def delivery_health(now: datetime | None = None) -> DeliveryHealth:
    """Per served issuer: the last notification, and the last 24 h by outcome and auth failures."""
    now = now or timezone.now()
    since = now - HEALTH_WINDOW
    served = settings.D1_ISSUER_IDS
    # (issuer_id, received_at) is indexed: the window and each "last" are index range scans.
    recent = InboxItem.objects.filter(issuer_id__in=served, received_at__gte=since)
    counts: dict[str, dict[str, Any]] = {}
    for row in recent.values("issuer_id").annotate(
        notifications=Count("pk"),
        rejected=Count("pk", filter=Q(outcome=InboxItem.Outcome.REJECTED)),
        failed=Count("pk", filter=Q(outcome=InboxItem.Outcome.FAILED)),
        **{name: Sum(name) for name in OPERATION_COUNTS},
    ):
        figures: dict[str, Any] = dict(row)
        counts[figures.pop("issuer_id")] = figures
    # Failures are counted by the hour: the window takes whole hours, the current one included.
    failures = dict(
        AuthFailureCount.objects.filter(hour__gt=since - timedelta(hours=1))
        .values("issuer_id")
        .annotate(total=Sum("count"))
        .values_list("issuer_id", "total")
    )
    issuers = [
        IssuerHealth(
            issuer_id=issuer_id,
            last_received_at=InboxItem.objects.filter(issuer_id=issuer_id).aggregate(
                last=Max("received_at")
            )["last"],
            auth_failures=failures.get(issuer_id, 0),
            **counts.get(issuer_id, {}),
        )
        for issuer_id in served
    ]
    return DeliveryHealth(
        since=since,
        issuers=issuers,
        token_auth_failures=failures.get(AuthFailureCount.TOKEN_ENDPOINT, 0),
    )

"""Notification bodies: store verbatim first, then parse and apply each operation.

The endpoint, `manage.py ingest_notification` and the admin's replay action all go through here,
so a body is handled the same way whichever door it came in by.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from tracker import ingest, pan
from tracker.d1.schema import BadPayload, Operation, parse_body, parse_operations
from tracker.models import InboxItem, Source

logger = logging.getLogger(__name__)

QUARANTINED = "quarantined"
_COUNTED = ("applied", "stale", "unrecognized", "conflict", "quarantined", "ignored")
_OUTCOME_FIELDS = ["outcome", "error", "results", "processed_at", "duplicate", *_COUNTED]


@dataclass
class Report:
    """What became of one body: an error for the whole body, or one entry per operation."""

    error: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(entry.get("verdict", QUARANTINED) for entry in self.results)


def store(issuer_id: str, body: bytes, headers: dict[str, str]) -> InboxItem:
    """Save the body before anything can fail on its content.

    Callers (the endpoint, the command) are outside any transaction, so the one INSERT commits
    on its own, before processing starts: whatever becomes of the processing, the body is kept.
    """
    # Masked before it is kept: a card number sent by mistake is never stored (tracker/pan.py).
    return InboxItem.objects.create(
        issuer_id=issuer_id,
        body=pan.mask_body(body),
        headers={name: pan.mask_pans(value) for name, value in headers.items()},
    )


def process(item: InboxItem) -> Report:
    """Apply a freshly stored body as a notification and record the outcome on the item."""

    # One transaction for the operations and the outcome: they never disagree, and a POST costs
    # one commit less (the write path's budget, issue #4).
    def apply_and_record() -> Report:
        report = _apply_body(item, Source.NOTIFICATION)
        _record(item, report)
        return report

    return ingest.in_retried_transaction(apply_and_record)


def _record(item: InboxItem, report: Report) -> None:
    counts = report.counts
    if report.error:
        item.outcome = InboxItem.Outcome.REJECTED
    elif counts[QUARANTINED]:
        item.outcome = InboxItem.Outcome.PARTIAL
    else:
        item.outcome = InboxItem.Outcome.PROCESSED
    item.error = report.error
    item.results = report.results
    item.processed_at = timezone.now()
    for name in _COUNTED:
        setattr(item, name, counts[name])
    item.duplicate = counts[ingest.DUPLICATE]
    # Never the body: it is already stored and can be megabytes.
    item.save(update_fields=_OUTCOME_FIELDS)


def mark_failed(item: InboxItem, error: Exception) -> None:
    """Record that processing failed transiently (D1 delivers again); best effort."""
    first_line = next(iter(str(error).splitlines()), "")
    try:
        InboxItem.objects.filter(pk=item.pk).update(
            outcome=InboxItem.Outcome.FAILED,
            error=pan.mask_pans(f"{error.__class__.__name__}: {first_line}")[:500],
            processed_at=timezone.now(),
        )
    except DatabaseError as e:
        # The database that just failed may still be down; the item stays "received".
        logger.warning("inbox %s could not be marked failed: %s", item.pk, e.__class__.__name__)


def replay(item: InboxItem) -> Report:
    """Apply a stored body again (source `replay`); idempotent, the item's own record is kept."""
    return _apply_body(item, Source.REPLAY)


def _apply_body(item: InboxItem, source: Source) -> Report:
    try:
        items = parse_body(bytes(item.body))
    except BadPayload as e:
        logger.error("inbox %s rejected: %s", item.pk, e)
        return Report(error=str(e))
    report = Report()
    good: list[tuple[int, Operation]] = []
    for index, parsed in parse_operations(items):
        if isinstance(parsed, BadPayload):
            logger.warning("inbox %s: operation %d quarantined: %s", item.pk, index, parsed)
            report.results.append({"index": index, "field": parsed.field, "error": str(parsed)})
        else:
            good.append((index, parsed))
    results = ingest.apply_many(item.issuer_id, [op for _, op in good], source, inbox=item)
    for (index, op), result in zip(good, results, strict=True):
        report.results.append(
            {
                "index": index,
                "cardId": op.card_id,
                "operationId": op.operation_id,
                "status": op.business_status,
                "verdict": str(result.verdict),
            }
        )
    report.results.sort(key=lambda entry: entry["index"])
    return report

"""Administrators' corrections to orders: each one audited, shown on the timeline, reversible.

A correction changes some of CardOrder.CORRECTABLE under the same row lock as the ingest, so it
never overwrites news that D1 delivered meanwhile, and never loses to a stale copy either. Each
one writes exactly one history row (who, when, why, and each field before and after) and one
`admin` event on the card's timeline. History rows are written here and nowhere else (see
models.CorrectionHistory): the ingest's hot path stays as it was.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from tracker import attention, queue, sla
from tracker.d1 import lifecycle
from tracker.models import CardOrder, Outcome, Source, TimelineEvent

# The row written to the history for each correction (simple-history's model).
Correction = CardOrder.history.model
# Correctable fields that say who the order is for, not where it stands: changing only these
# leaves the queue's acknowledgement in place.
REFERENCES = frozenset(
    {"issuer_request_id", "input_file_name", "customer_reference", "bulk_group_id", "bulk_order_id"}
)


def correct(
    order_id: int,
    values: Mapping[str, Any],
    user,
    reason: str,
    *,
    reverts: Correction | None = None,
) -> Correction | None:
    """Give the order these values; None if it already had them all (nothing is recorded)."""
    unknown = set(values) - set(CardOrder.CORRECTABLE)
    if unknown:
        raise ValueError(f"not correctable by hand: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        order = CardOrder.objects.select_for_update().get(pk=order_id)
        changes = {
            name: (getattr(order, name), value)
            for name, value in values.items()
            if getattr(order, name) != value
        }
        if not changes:
            return None
        now = timezone.now()
        for name, (_before, after) in changes.items():
            setattr(order, name, after)
        derived = _derive(order, changes)
        if set(changes) - REFERENCES:
            attention.state_changed(order, now)  # as when the ingest records a change of state
            derived += ["state_changed_at", "muted_until"]
        attention.update(order)
        order.save(update_fields=[*changes, *derived, "silent_after", "attention_since"])
        record = history_row(order, changes, user, reason, now, reverts=reverts)
        record.save()
        note = reason
        if reverts is not None:
            note = _("Revert of change #%(number)d: %(reason)s") % {
                "number": reverts.history_id,
                "reason": reason,
            }
        timeline_event(order, record, user, note, describe(changes)).save()
        return record


def revert(change: Correction, user, reason: str) -> Correction | None:
    """Give back to each field this correction changed the value it had before."""
    values = {
        name: CardOrder._meta.get_field(name).to_python(before)
        for name, (before, _after) in change.changes.items()
    }
    return correct(change.id, values, user, reason, reverts=change)


def resolve(order_ids: Iterable[int], user, note: str) -> int:
    """Acknowledge the orders in the queue with this note, on their timelines too."""
    done = 0
    with transaction.atomic():
        # Locked in the ingest's order (issuer, card), so the two never deadlock.
        orders = CardOrder.objects.select_for_update().filter(pk__in=list(order_ids))
        for order in orders.order_by("issuer_id", "card_id"):
            acknowledgement = queue.acknowledge(order, user, note)
            TimelineEvent.objects.create(
                order=order,
                content_hash=_event_key(f"resolved:{acknowledgement.pk}"),
                source=Source.ADMIN,
                verdict=Outcome.APPLIED,
                received_at=acknowledgement.created_at,
                user=user,
                note=_("Marked resolved: %(note)s") % {"note": note},
            )
            done += 1
    return done


def describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """One line per field: "label: before → after"."""
    return "\n".join(
        f"{CardOrder._meta.get_field(name).verbose_name}: {shown(before)} → {shown(after)}"
        for name, (before, after) in changes.items()
    )


def _derive(order: CardOrder, changes: Mapping[str, Any]) -> list[str]:
    """Set what follows from the corrected fields; return the names of the fields it set."""
    derived = []
    if "stage" in changes:
        order.stage_rank = lifecycle.rank(order.stage) or 0
        derived.append("stage_rank")
        if "terminal" not in changes:
            order.terminal = bool(order.stage) and lifecycle.is_terminal(order.stage)
            derived.append("terminal")
    if "due_date" in changes:
        # A date typed by hand replaces whatever moment D1 sent with it.
        order.due_at = None
        derived.append("due_at")
    if {"due_date", "production_site"} & set(changes):
        order.late_after = sla.late_after(order.due_date, order.due_at, order.production_site)
        derived.append("late_after")
    return derived


def history_row(
    order: CardOrder,
    changes: Mapping[str, tuple[Any, Any]],
    user,
    reason: str,
    at: datetime,
    *,
    created: bool = False,
    reverts: Correction | None = None,
) -> Correction:
    """The history row (unsaved) of one change: the order as it is now, and what changed."""
    return Correction(
        history_type="+" if created else "~",
        history_user=user,
        history_date=at,
        history_change_reason=reason,
        changes={
            name: [_plain(before), _plain(after)] for name, (before, after) in changes.items()
        },
        reverts=reverts.history_id if reverts else None,
        **{field.attname: getattr(order, field.attname) for field in Correction.tracked_fields},
    )


def timeline_event(order: CardOrder, record: Correction, user, note: str, diff: str):
    """The card's timeline entry (unsaved) for a saved history row."""
    return TimelineEvent(
        order=order,
        content_hash=_event_key(f"correction:{record.history_id}"),
        source=Source.ADMIN,
        verdict=Outcome.APPLIED,
        received_at=record.history_date,
        user=user,
        note=f"{note}\n{diff}" if diff else note,
    )


def _event_key(key: str) -> str:
    # Unique per order like every event's content hash; derived from the record it stands for.
    return hashlib.sha256(key.encode()).hexdigest()


def _plain(value: Any) -> Any:
    """The value as JSON can keep it (dates as ISO strings)."""
    if isinstance(value, date):
        return value.isoformat()
    json.dumps(value)  # anything else that cannot be kept should fail here, not at the INSERT
    return value


def shown(value: Any) -> str:
    """A value as a person reads it: a dash for nothing, yes or no."""
    if value in ("", None):
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    return str(value)

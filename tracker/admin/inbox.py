"""The notification inbox in the admin site: every body as D1 sent it, read-only, and replay."""

import logging
from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.db import InterfaceError, OperationalError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tracker import inbox
from tracker.admin.common import (
    BoundedAdmin,
    IssuerFilter,
    NoAddOrDelete,
    capped_pks,
    flat_fields,
    pre,
    pretty_body,
    pretty_json,
)
from tracker.models import InboxItem, Outcome

logger = logging.getLogger(__name__)

# A replay runs inside the admin's request; more than this belongs in a command.
_REPLAY_LIMIT = 500


class OperationOutcomeFilter(admin.SimpleListFilter):
    """Bodies with at least one operation of an outcome (the one Outcome vocabulary)."""

    title = _("operations")
    parameter_name = "operations"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(outcome.value, str(outcome.label)) for outcome in Outcome]

    def queryset(self, request: HttpRequest, queryset: QuerySet[InboxItem]) -> QuerySet[InboxItem]:
        value = self.value()
        if value not in Outcome.values:
            return queryset
        return queryset.filter(**{f"{value}__gt": 0})


@admin.register(InboxItem)
class InboxItemAdmin(NoAddOrDelete, BoundedAdmin):
    list_display = [
        "received_at",
        "issuer_id",
        "outcome",
        "applied",
        "duplicate",
        "stale",
        "unrecognized",
        "quarantined",
    ]
    list_filter = ["outcome", OperationOutcomeFilter, IssuerFilter]

    actions = ["replay"]
    fields = [
        ("issuer_id", "received_at", "processed_at"),
        ("outcome", "error"),
        ("applied", "duplicate", "stale", "unrecognized", "conflict", "quarantined", "ignored"),
        "shown_headers",
        "shown_body",
        "shown_results",
    ]
    readonly_fields = flat_fields(fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboxItem]:
        # The list never shows bodies, and each can be megabytes.
        return super().get_queryset(request).defer("body", "headers", "results")

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # A stored body is evidence and never edited; "change" only grants the replay action.
        return obj is None and super().has_change_permission(request)

    @admin.display(description=_("headers"))
    def shown_headers(self, item: InboxItem) -> str:
        return pre(pretty_json(item.headers))

    @admin.display(description=_("body"))
    def shown_body(self, item: InboxItem) -> str:
        return pre(pretty_body(bytes(item.body)))

    @admin.display(description=_("results"))
    def shown_results(self, item: InboxItem) -> str:
        return pre(pretty_json(item.results))

    @admin.action(
        description=_("Replay the selected notifications (idempotent)"), permissions=["change"]
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[InboxItem]) -> None:
        message = _("Select at most %(limit)d notifications to replay at once.")
        pks = capped_pks(self, request, queryset, _REPLAY_LIMIT, message)
        if pks is None:
            return
        items = InboxItem.objects.filter(pk__in=pks).order_by("received_at", "pk")
        verdicts, rejected, done = Counter(), 0, 0
        try:
            # Oldest first, as D1 sent them; a few bodies in memory at a time.
            for item in items.iterator(chunk_size=10):
                report = inbox.replay(item)
                verdicts.update(report.counts)
                rejected += bool(report.error)
                done += 1
        except (OperationalError, InterfaceError) as e:
            logger.warning("replay stopped after %d notifications: %s", done, e)
            message = _("The database is busy: %(done)d of %(total)d replayed. Try again.")
            self.message_user(request, message % {"done": done, "total": len(pks)}, messages.ERROR)
            return
        self.message_user(
            request, _replay_message(done, verdicts, rejected), _level(verdicts, rejected)
        )


def _replay_message(done: int, verdicts: Counter, rejected: int) -> str:
    summary = ", ".join(f"{count} {verdict}" for verdict, count in sorted(verdicts.items()))
    message = ngettext(
        "Replayed %(done)d notification: %(summary)s.",
        "Replayed %(done)d notifications: %(summary)s.",
        done,
    ) % {"done": done, "summary": summary or _("no operations")}
    if rejected:
        message += " " + ngettext(
            "%(rejected)d body can never be applied (see its error).",
            "%(rejected)d bodies can never be applied (see their errors).",
            rejected,
        ) % {"rejected": rejected}
    return message


def _level(verdicts: Counter, rejected: int) -> int:
    return messages.WARNING if rejected or verdicts[Outcome.QUARANTINED] else messages.SUCCESS

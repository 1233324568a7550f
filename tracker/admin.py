import json
import logging
from collections import Counter
from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tracker import inbox, tasks
from tracker.models import (
    Acknowledgement,
    CardOrder,
    InboxItem,
    LookupAudit,
    Sweep,
    Threshold,
    TimelineEvent,
)

logger = logging.getLogger(__name__)

# A replay runs inside the admin's request; more than this belongs in a command.
_REPLAY_LIMIT = 500


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CardOrder)
class CardOrderAdmin(ReadOnlyAdmin):
    list_display = [
        "card_id",
        "issuer_id",
        "stage",
        "operation_status",
        "due_date",
        "last_event_at",
    ]
    list_filter = ["issuer_id", "stage", "terminal", "conflict"]
    search_fields = ["=card_id", "=issuer_request_id", "=operation_id", "=tracking_number"]
    show_full_result_count = False


@admin.register(TimelineEvent)
class TimelineEventAdmin(ReadOnlyAdmin):
    list_display = ["order", "status", "verdict", "source", "received_at"]
    list_filter = ["verdict", "source"]
    list_select_related = ["order"]
    show_full_result_count = False


def _pre(text: str) -> str:
    return format_html("<pre>{}</pre>", text)


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _pretty_body(raw: bytes) -> str:
    """The body as D1 sent it: pretty-printed when it is JSON, else decoded as far as it goes."""
    try:
        return _pretty_json(json.loads(raw))
    except ValueError:
        return raw.decode("utf-8", errors="replace")


@admin.register(InboxItem)
class InboxItemAdmin(admin.ModelAdmin):
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
    list_filter = ["outcome", "issuer_id"]
    show_full_result_count = False

    actions = ["replay"]
    fields = [
        ("issuer_id", "received_at", "processed_at"),
        ("outcome", "error"),
        ("applied", "duplicate", "stale", "unrecognized", "conflict", "quarantined", "ignored"),
        "shown_headers",
        "shown_body",
        "shown_results",
    ]
    readonly_fields = [name for row in fields for name in ([row] if isinstance(row, str) else row)]

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboxItem]:
        # The list never shows bodies, and each can be megabytes.
        return super().get_queryset(request).defer("body", "headers", "results")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # A stored body is evidence and never edited; "change" only grants the replay action.
        return obj is None and super().has_change_permission(request)

    @admin.display(description=_("headers"))
    def shown_headers(self, item: InboxItem) -> str:
        return _pre(_pretty_json(item.headers))

    @admin.display(description=_("body"))
    def shown_body(self, item: InboxItem) -> str:
        return _pre(_pretty_body(bytes(item.body)))

    @admin.display(description=_("results"))
    def shown_results(self, item: InboxItem) -> str:
        return _pre(_pretty_json(item.results))

    @admin.action(
        description=_("Replay the selected notifications (idempotent)"), permissions=["change"]
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[InboxItem]) -> None:
        pks = list(queryset.values_list("pk", flat=True)[: _REPLAY_LIMIT + 1])
        if len(pks) > _REPLAY_LIMIT:
            message = _("Select at most %(limit)d notifications to replay at once.")
            self.message_user(request, message % {"limit": _REPLAY_LIMIT}, messages.ERROR)
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
    return messages.WARNING if rejected or verdicts[inbox.QUARANTINED] else messages.SUCCESS


@admin.register(Threshold)
class ThresholdAdmin(admin.ModelAdmin):
    list_display = ["name", "hours", "updated_at"]
    list_editable = ["hours"]
    fields = ["name", "hours"]
    readonly_fields = ["name"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # one row per stage, created by a migration

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        # Orders already waiting get the new deadline in the background (there may be many).
        transaction.on_commit(partial(tasks.recompute_attention.enqueue, name=obj.name))


@admin.register(Acknowledgement)
class AcknowledgementAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "order", "kind", "user", "until", "note"]
    list_filter = ["kind"]
    list_select_related = ["order", "user"]
    search_fields = ["=order__card_id"]


@admin.register(LookupAudit)
class LookupAuditAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "action", "outcome", "issuer_id", "card_id"]
    list_filter = ["action", "outcome"]
    search_fields = ["=card_id", "=username"]
    ordering = ["-at"]
    show_full_result_count = False


@admin.register(Sweep)
class SweepAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "finished_at",
        "issuer_id",
        "checked",
        "repaired",
        "not_found",
        "failed",
        "skipped",
        "stop_reason",
    ]
    list_filter = ["stop_reason", "issuer_id"]
    ordering = ["-started_at", "-id"]
    show_full_result_count = False

"""The records kept beside the orders: timeline events, acknowledgements and the lookup audit
(read-only), and the attention thresholds (administrators edit them)."""

from functools import partial

from django.conf import settings
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from tracker import tasks
from tracker.admin.common import (
    CheckedSelection,
    ExactSearch,
    MaskPansInForms,
    NoAddOrDelete,
    ReadOnlyAdmin,
    flat_fields,
    pre_json,
)
from tracker.models import (
    Acknowledgement,
    ExportAudit,
    LookupAudit,
    Sweep,
    Threshold,
    TimelineEvent,
)


class _ByCardSearch(ExactSearch):
    """Search by the exact card ID of the order (its index serves it; case matters)."""

    search_help_text = _("The whole card ID.")

    def search(self, queryset: QuerySet, term: str) -> QuerySet:
        return queryset.filter(order__card_id=term)


@admin.register(TimelineEvent)
class TimelineEventAdmin(_ByCardSearch, ReadOnlyAdmin):
    list_display = [
        "received_at",
        "order",
        "status",
        "shipment_status",
        "verdict",
        "source",
        "user",
    ]
    list_filter = ["verdict", "source"]
    list_select_related = ["order", "user"]
    search_fields = ["order__card_id"]
    fields = [
        ("order", "received_at"),
        ("source", "verdict", "shown_inbox"),
        ("operation_id", "status", "operation_status", "shipment_status"),
        ("start_time", "end_time"),
        ("user", "note"),
        "shown_raw",
    ]
    readonly_fields = flat_fields(fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TimelineEvent]:
        return super().get_queryset(request).defer("raw")

    @admin.display(description=_("operation (as sent)"))
    def shown_raw(self, event: TimelineEvent) -> str:
        return pre_json(event.raw)

    @admin.display(description=_("notification"))
    def shown_inbox(self, event: TimelineEvent) -> str:
        # A link by id: the inbox item itself holds the whole body.
        if event.inbox_id is None:
            return "-"
        url = reverse("admin:tracker_inboxitem_change", args=[event.inbox_id])
        return format_html('<a href="{}">#{}</a>', url, event.inbox_id)


@admin.register(Threshold)
class ThresholdAdmin(CheckedSelection, MaskPansInForms, NoAddOrDelete, admin.ModelAdmin):
    list_display = ["name", "hours", "updated_at"]
    list_editable = ["hours"]
    fields = ["name", "hours"]
    readonly_fields = ["name"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        # Orders already waiting get the new deadline in the background (there may be many).
        transaction.on_commit(partial(tasks.recompute_attention.enqueue, name=obj.name))


@admin.register(Acknowledgement)
class AcknowledgementAdmin(_ByCardSearch, ReadOnlyAdmin):
    list_display = ["created_at", "order", "kind", "user", "until", "note"]
    list_filter = ["kind"]
    list_select_related = ["order", "user"]
    search_fields = ["order__card_id"]


@admin.register(LookupAudit)
class LookupAuditAdmin(ExactSearch, ReadOnlyAdmin):
    list_display = ["at", "username", "action", "outcome", "issuer_id", "card_id"]
    list_filter = ["action", "outcome"]
    search_fields = ["card_id", "username"]
    search_help_text = _("The whole card ID or username.")
    ordering = ["-at"]

    def search(self, queryset: QuerySet, term: str) -> QuerySet:
        # (issuer_id, card_id, at) and (username, at) are indexed; naming the served issuers
        # lets the first index find a card without its issuer.
        by_card = queryset.filter(issuer_id__in=settings.D1_ISSUER_IDS, card_id=term)
        return by_card | queryset.filter(username=term)


@admin.register(ExportAudit)
class ExportAuditAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "rows", "filters"]
    ordering = ["-at"]


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
    list_filter = ["stop_reason"]
    ordering = ["-started_at", "-id"]

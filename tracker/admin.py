from functools import partial

from django.contrib import admin
from django.db import transaction

from tracker.models import Acknowledgement, CardOrder, InboxItem, Threshold, TimelineEvent


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


@admin.register(InboxItem)
class InboxItemAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "issuer_id", "outcome", "applied", "duplicate", "quarantined"]
    list_filter = ["outcome", "issuer_id"]
    show_full_result_count = False


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
        from tracker import tasks

        super().save_model(request, obj, form, change)
        # Orders already waiting get the new deadline in the background (there may be many).
        transaction.on_commit(partial(tasks.recompute_attention.enqueue, name=obj.name))


@admin.register(Acknowledgement)
class AcknowledgementAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "order", "kind", "user", "until", "note"]
    list_filter = ["kind"]
    list_select_related = ["order", "user"]
    search_fields = ["=order__card_id"]
    show_full_result_count = False

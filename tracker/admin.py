from django.contrib import admin

from tracker.models import CardOrder, InboxItem, LookupAudit, TimelineEvent


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


@admin.register(LookupAudit)
class LookupAuditAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "action", "outcome", "issuer_id", "card_id"]
    list_filter = ["action", "outcome"]
    search_fields = ["=card_id", "=username"]
    ordering = ["-at"]
    show_full_result_count = False

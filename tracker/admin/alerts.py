"""Alerts: the rules (administrators edit thresholds and switch them on or off) and every alert
with its history (read-only for everyone: only the evaluation writes them)."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

from tracker.admin.common import NoAddOrDelete, ReadOnlyAdmin
from tracker.models import Alert, AlertEvent, AlertRule, LookupAuditDay
from tracker.ops import alerts


@admin.register(AlertRule)
class AlertRuleAdmin(NoAddOrDelete, admin.ModelAdmin):
    list_display = ["kind", "threshold", "enabled", "updated_at"]
    list_editable = ["threshold", "enabled"]
    fields = ["kind", "threshold", "enabled"]
    readonly_fields = ["kind"]

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        alerts.rules()  # every rule listed, with its threshold from the settings until edited
        return super().changelist_view(request, extra_context)


class AlertEventInline(admin.TabularInline):
    model = AlertEvent
    fields = ["at", "kind", "channel", "detail"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "rule", "subject", "value", "last_value", "resolved_at"]
    list_filter = ["rule", ("resolved_at", admin.EmptyFieldListFilter)]
    fields = [
        ("rule", "subject"),
        ("started_at", "last_seen_at", "resolved_at"),
        ("threshold", "value", "last_value"),
        "summary",
    ]
    readonly_fields = ["rule", "subject", "started_at", "last_seen_at", "resolved_at",
                       "threshold", "value", "last_value", "summary"]  # fmt: skip
    inlines = [AlertEventInline]


@admin.register(LookupAuditDay)
class LookupAuditDayAdmin(ReadOnlyAdmin):
    list_display = ["day", "username", "action", "outcome", "issuer_id", "card_id", "count"]
    list_filter = ["action", "outcome"]
    search_fields = ["=card_id", "=username"]
    search_help_text = _("The whole card ID or username.")

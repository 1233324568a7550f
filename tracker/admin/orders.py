"""Card orders in the admin site: corrections with a reason, their history and revert, re-sync
from D1, mark resolved, and registration from a CSV file.

Every write goes through tracker/corrections.py or tracker/csv_import.py, under the ingest's
row locks; nobody may add or delete an order here.
"""

import logging

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from import_export.admin import ImportMixin
from import_export.formats.base_formats import CSV
from import_export.forms import ImportForm
from import_export.tmp_storages import CacheStorage

from tracker import corrections, pan, queries, queue
from tracker.admin.common import (
    BoundedAdmin,
    ExactSearch,
    IssuerFilter,
    MaskPansInForms,
    MutedFilter,
    NoAddOrDelete,
    SiteFilter,
    StageFilter,
    UnrecognizedFilter,
    capped_pks,
    pre_json,
)
from tracker.admin.forms import CardOrderForm, ReasonForm, ResolveForm
from tracker.csv_import import OrderResource
from tracker.models import CardOrder
from tracker.validators import no_card_number

logger = logging.getLogger(__name__)

# Marking resolved runs inside the admin's request, a few statements per order.
RESOLVE_LIMIT = 500
IMPORT_MAX_BYTES = 5 * 1024 * 1024  # far above csv_import.MAX_ROWS rows

# Kept by Tracker itself, never corrected by hand.
_TIMES = [
    "first_seen_at",
    "last_event_at",
    "last_checked_at",
    "state_changed_at",
    "duplicates_received",
    "late_after",
    "silent_after",
    "attention_since",
    "muted_until",
]
_READ_ONLY = [
    "issuer_id",
    "card_id",
    "card_page",
    "operation_id",
    "operation",
    "tracking_type",
    "shipment_message",
    "tracking_url",
    "shown_shipment",
    "error_code",
    "error",
    "reason",
    *_TIMES,
]
_FIELDSETS = [
    (
        gettext_lazy("Order"),
        {"fields": ["issuer_id", "card_id", "card_page", "operation_id", "operation"]},
    ),
    (
        gettext_lazy("State"),
        {
            "fields": [
                "stage",
                "operation_status",
                ("terminal", "conflict", "unknown_to_d1"),
                "unrecognized_status",
                "due_date",
                "production_site",
                "tracking_type",
            ]
        },
    ),
    (
        gettext_lazy("Shipment"),
        {
            "fields": [
                "carrier",
                "tracking_number",
                "shipment_status",
                "shipment_message",
                "tracking_url",
                "shown_shipment",
            ]
        },
    ),
    (gettext_lazy("Errors sent by D1"), {"fields": ["error_code", "error", "reason"]}),
    (
        gettext_lazy("The issuer's references"),
        {
            "fields": [
                "issuer_request_id",
                "input_file_name",
                "customer_reference",
                "bulk_group_id",
                "bulk_order_id",
            ]
        },
    ),
    (gettext_lazy("Times and attention"), {"fields": _TIMES}),
]
_WHY = (gettext_lazy("Why"), {"fields": ["change_reason", "loaded_state"]})


class _ImportStorage(CacheStorage):
    """The uploaded file between the preview and its confirmation, in the shared cache."""

    CACHE_LIFETIME = 3600

    def save(self, data) -> None:
        # The file is read back from here for the preview and the import: masked once, it never
        # holds a card number in the cache, the preview or the orders.
        super().save(pan.mask_pans(data) if isinstance(data, str) else pan.mask_bytes(data))


class OrdersImportForm(ImportForm):
    def clean_import_file(self):
        import_file = self.cleaned_data["import_file"]
        if import_file.size > IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(mb)d MB: split it.")
                % {"mb": IMPORT_MAX_BYTES // 2**20}
            )
        no_card_number(import_file.name)  # the name goes into the history as the reason
        return import_file


@admin.register(CardOrder)
class CardOrderAdmin(MaskPansInForms, NoAddOrDelete, ExactSearch, ImportMixin, BoundedAdmin):
    form = CardOrderForm
    list_display = [
        "card_id",
        "issuer_id",
        "stage",
        "operation_status",
        "flags",
        "customer_reference",
        "due_date",
        "last_event_at",
    ]
    list_filter = [
        IssuerFilter,
        StageFilter,
        "terminal",
        "conflict",
        UnrecognizedFilter,
        "unknown_to_d1",
        MutedFilter,
        SiteFilter,
    ]
    list_select_related = False  # no relation is shown in the list
    search_fields = queries.SEARCH_FIELDS  # searched by get_search_results()
    search_help_text = gettext_lazy(
        "Card ID, issuer request ID, operation ID, tracking number, input file name or customer "
        "reference: the whole value, or how it starts (case matters)."
    )
    readonly_fields = _READ_ONLY
    actions = ["resync", "mark_resolved"]

    resource_classes = [OrderResource]
    import_formats = [CSV]
    import_form_class = OrdersImportForm
    # Shared by every process (Redis or the database), unlike a temporary file.
    tmp_storage_class = _ImportStorage
    import_template_name = "admin/tracker/cardorder/import.html"
    import_error_display = ("message",)

    def has_import_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tracker.import_orders")

    def get_fieldsets(self, request: HttpRequest, obj=None):
        if self.has_change_permission(request, obj):
            return [*_FIELDSETS, _WHY]
        return _FIELDSETS

    def search(self, queryset: QuerySet, term: str) -> QuerySet:
        return queryset.filter(pk__in=queries.matching_orders(term))

    @admin.display(description=gettext_lazy("flags"))
    def flags(self, order: CardOrder) -> str:
        names = [
            (order.terminal, _("terminal")),
            (order.conflict, _("conflict")),
            (bool(order.unrecognized_status), _("unrecognized")),
            (order.unknown_to_d1, _("unknown to D1")),
        ]
        return ", ".join(str(name) for present, name in names if present)

    @admin.display(description=gettext_lazy("card page"))
    def card_page(self, order: CardOrder) -> str:
        url = reverse("tracker:card_detail", args=[order.issuer_id, order.card_id])
        return format_html('<a href="{}">{}</a>', url, _("Open the card page"))

    @admin.display(description=gettext_lazy("shipment (as sent)"))
    def shown_shipment(self, order: CardOrder) -> str:
        return pre_json(order.shipment)

    # --- Corrections ---------------------------------------------------------------------------

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        order = super().get_object(request, object_id, from_field)
        if order is not None and request.method == "POST":
            # The change form runs in one transaction: the correction is checked against the row
            # as it is now, locked like the ingest locks it, until it is saved.
            order = CardOrder.objects.select_for_update().get(pk=order.pk)
        return order

    def _order(self, request: HttpRequest, object_id: str) -> CardOrder | None:
        # For the history and revert pages, outside the change form's transaction: no lock
        # (corrections.revert() takes its own).
        return super().get_object(request, unquote(object_id))

    def save_model(self, request: HttpRequest, obj: CardOrder, form, change: bool) -> None:
        reason = form.cleaned_data["change_reason"]
        corrections.correct(obj.pk, form.corrected(), request.user, reason)

    def response_change(self, request: HttpRequest, obj: CardOrder) -> HttpResponse:
        url = reverse("tracker:card_detail", args=[obj.issuer_id, obj.card_id])
        message = format_html(
            '{} <a href="{}">{}</a>',
            _("The change and its reason are on the card's timeline."),
            url,
            _("Open the card page"),
        )
        self.message_user(request, message, messages.INFO)
        return super().response_change(request, obj)

    def get_urls(self):
        revert = self.admin_site.admin_view(self.revert_view)
        return [
            path(
                "<path:object_id>/history/<int:change_id>/revert/",
                revert,
                name="tracker_cardorder_revert",
            ),
            *super().get_urls(),
        ]

    def _page_context(self, request: HttpRequest, title: str, order: CardOrder | None = None):
        """What the admin's frame needs on the card orders' own pages (page.html)."""
        context = {**self.admin_site.each_context(request), "title": title, "opts": self.opts}
        if order is not None:
            context.update(subtitle=str(order), object=order)
        return context

    def history_view(self, request: HttpRequest, object_id: str, extra_context=None):
        order = self._order(request, object_id)
        if order is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, order):
            raise PermissionDenied
        records = corrections.Correction.objects.filter(id=order.pk).select_related("history_user")
        page = Paginator(records.order_by("-history_date", "-history_id"), 50).get_page(
            request.GET.get("p")
        )
        # Which of this page's changes a later change reverted.
        shown = [record.history_id for record in page]
        reverted = dict(
            corrections.Correction.objects.filter(reverts__in=shown).values_list(
                "reverts", "history_id"
            )
        )
        context = {
            **self._page_context(request, _("History of corrections"), order),
            "page": page,
            "rows": [_history_row(record, reverted) for record in page],
            "can_revert": self.has_change_permission(request, order),
        }
        return TemplateResponse(request, "admin/tracker/cardorder/object_history.html", context)

    def revert_view(self, request: HttpRequest, object_id: str, change_id: int) -> HttpResponse:
        order = self._order(request, object_id)
        if order is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, order):
            raise PermissionDenied
        change = get_object_or_404(corrections.Correction, history_id=change_id, id=order.pk)
        history = reverse("admin:tracker_cardorder_history", args=[order.pk])
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            record = corrections.revert(change, request.user, form.cleaned_data["reason"])
            if record is None:
                self.message_user(
                    request, _("Nothing to revert: the order already has those values.")
                )
            else:
                self.message_user(
                    request,
                    _("Change #%(change)d reverted as change #%(revert)d.")
                    % {"change": change.history_id, "revert": record.history_id},
                    messages.SUCCESS,
                )
            return redirect(history)
        title = _("Revert change #%(number)d") % {"number": change.history_id}
        context = {
            **self._page_context(request, title, order),
            "change": {"record": change},
            "fields": [
                (
                    CardOrder._meta.get_field(name).verbose_name,
                    corrections.shown(getattr(order, name)),
                    corrections.shown(before),
                )
                for name, (before, _after) in change.changes.items()
            ],
            "form": form,
            "history_url": history,
        }
        return TemplateResponse(request, "admin/tracker/cardorder/revert.html", context)

    # --- Actions -------------------------------------------------------------------------------

    @admin.action(
        description=gettext_lazy("Re-sync the selected orders from D1"), permissions=["change"]
    )
    def resync(self, request: HttpRequest, queryset: QuerySet[CardOrder]) -> None:
        limit = settings.TRACKER_RECHECK_MAX
        message = _("Select at most %(limit)d orders to re-sync at once.")
        pks = capped_pks(self, request, queryset, limit, message)
        if pks is None:
            return
        batch = queue.start_recheck(CardOrder.objects.filter(pk__in=pks), request.user, limit)
        message = ngettext(
            "Asked D1 again about %(count)d order: its re-sync runs in the background, "
            "within the shared budget of %(rps)s calls a second.",
            "Asked D1 again about %(count)d orders: their re-syncs run in the background, "
            "within the shared budget of %(rps)s calls a second.",
            batch.total,
        ) % {"count": batch.total, "rps": f"{settings.D1_MAX_RPS:g}"}
        self.message_user(request, message, messages.SUCCESS)

    @admin.action(
        description=gettext_lazy("Mark the selected orders resolved…"), permissions=["change"]
    )
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[CardOrder]):
        message = _("Select at most %(limit)d orders to mark resolved at once.")
        ids = capped_pks(self, request, queryset, RESOLVE_LIMIT, message)
        if ids is None:
            return None
        form = ResolveForm(request.POST if "confirm" in request.POST else None)
        if form.is_bound and form.is_valid():
            done = corrections.resolve(ids, request.user, form.cleaned_data["note"])
            message = ngettext(
                "Marked %(count)d order resolved.", "Marked %(count)d orders resolved.", done
            ) % {"count": done}
            self.message_user(request, message, messages.SUCCESS)
            return None
        context = {
            **self._page_context(request, _("Mark orders resolved")),
            "orders": queryset.order_by("card_id")[:50],
            "ids": ids,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/tracker/cardorder/resolve.html", context)

    # --- CSV import ----------------------------------------------------------------------------

    def import_action(self, request: HttpRequest, **kwargs) -> HttpResponse:
        response = super().import_action(request, **kwargs)
        context = getattr(response, "context_data", None) or {}
        if context.get("result") is not None and not context.get("confirm_form"):
            # A file with errors is never confirmed: keep no copy of it (it may hold anything).
            upload = context["form"].cleaned_data["import_file"]
            _ImportStorage(name=upload.tmp_storage_name).remove()
        return response

    def get_import_data_kwargs(self, **kwargs):
        # Rows are checked again when the import is confirmed; if one fails now (the database
        # changed since the preview), nothing is written.
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def process_result(self, result, request: HttpRequest) -> HttpResponse:
        if result.has_validation_errors():
            message = _(
                "Nothing was imported: the orders changed since the preview. Import the file "
                "again to see why."
            )
        elif result.has_errors():
            errors = [*result.base_errors, *(e for _row, row in result.row_errors() for e in row)]
            problem = errors[0].error
            logger.error("CSV import refused: %s", problem.__class__.__name__)
            message = _("Nothing was imported: the database refused the file (%(problem)s).") % {
                "problem": next(iter(str(problem).splitlines()), problem.__class__.__name__)
            }
        else:
            return super().process_result(result, request)
        self.message_user(request, message, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:tracker_cardorder_import"))


def _history_row(record, reverted: dict[int, int]) -> dict:
    return {
        "record": record,
        "changes": [
            (
                CardOrder._meta.get_field(name).verbose_name,
                corrections.shown(before),
                corrections.shown(after),
            )
            for name, (before, after) in record.changes.items()
        ],
        "reverted_by": reverted.get(record.history_id),
    }

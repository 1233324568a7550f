"""What every admin page of Tracker shares: bounded counts, filters that cost no query to build,
read-only pages, and JSON shown pretty.

A list page must cost the same on a million rows: no full COUNT(*), and no filter whose choices
come from a SELECT DISTINCT over the table (Django's default for a plain field).
"""

import json
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from tracker import pan
from tracker.d1 import lifecycle, schema

COUNT_CAP = 10_000


def masking_form(form_class: type) -> type:
    """The form class, with every text it cleans masked for card numbers (passwords aside)."""

    class Masked(form_class):
        def clean(self):
            data = super().clean()
            cleaned = self.cleaned_data if data is None else data
            for name, value in cleaned.items():
                if isinstance(value, str) and "password" not in name:
                    cleaned[name] = pan.mask_pans(value)
            return cleaned

    Masked.__name__ = Masked.__qualname__ = form_class.__name__
    return Masked


_LARGEST_ID = 2**63 - 1


class CheckedSelection:
    """An action posted with ids that are not ids (typed by hand, a tampered form) is answered
    with a message on the list, not a 500 from the database."""

    def response_action(self, request: HttpRequest, queryset: QuerySet, **kwargs):
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if self.model._meta.pk.get_internal_type() in ("AutoField", "BigAutoField") and not all(
            value.isascii() and value.isdigit() and int(value) <= _LARGEST_ID for value in selected
        ):
            self.message_user(
                request, _("The selection holds something that is not an id."), messages.ERROR
            )
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset, **kwargs)


class MaskPansInForms:
    """No admin form stores a card number: each text field is masked as it is cleaned."""

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        return masking_form(super().get_form(request, obj, change=change, **kwargs))

    def get_changelist_form(self, request: HttpRequest, **kwargs):
        return masking_form(super().get_changelist_form(request, **kwargs))


class CappedPaginator(Paginator):
    """Counts at most COUNT_CAP rows: past that, a list says "more than 10,000"."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        # Unordered and limited, so the database stops after COUNT_CAP + 1 rows.
        return self.object_list.order_by()[: self.cap + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.cap


class _FixedOrderChangeList(ChangeList):
    """The admin's own order only: `?o=` could otherwise ask for a sort of the whole table."""

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list[str]:
        ordering = list(self.model_admin.get_ordering(request) or [])
        return [*ordering, "-pk"] if "-pk" not in ordering else ordering


class BoundedAdmin(CheckedSelection, admin.ModelAdmin):
    """A list page with a bounded count, in a fixed order, and no unbounded "Show all"."""

    paginator = CappedPaginator
    show_full_result_count = False
    # Facet counts would count the whole table once per filter choice, and sorting by a column
    # without an index would sort all of it: lists are newest first (the primary key's order).
    show_facets = admin.ShowFacets.NEVER
    sortable_by = ()

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return _FixedOrderChangeList

    list_max_show_all = 200


class NoAddOrDelete:
    """Rows that come from D1, a migration or an import: nobody adds or deletes one here, not even
    a superuser (D1's record of a card, a notification body, a stage's threshold)."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyAdmin(NoAddOrDelete, BoundedAdmin):
    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def pre(text: str) -> str:
    return format_html("<pre>{}</pre>", text)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def capped_pks(model_admin, request: HttpRequest, queryset, limit: int, message: str):
    """The selected rows' ids for an action that runs inside the request; None, and the user
    told why (`message` % {"limit": limit}), when more than `limit` are selected."""
    pks = list(queryset.values_list("pk", flat=True)[: limit + 1])
    if len(pks) > limit:
        model_admin.message_user(request, message % {"limit": limit}, messages.ERROR)
        return None
    return pks


def pre_json(value: Any) -> str:
    """JSON kept as sent, indented and read-only; "-" when there is none."""
    return pre(pretty_json(value)) if value is not None else "-"


def flat_fields(fields: list) -> list[str]:
    """The names in a `fields` layout whose rows may be tuples: to show them all read-only."""
    return [name for row in fields for name in ([row] if isinstance(row, str) else row)]


class ExactSearch:
    """Search on one exact value, which an index serves (Django's would be case-insensitive,
    which no index here can); subclasses say how in search()."""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        return self.search(queryset, term), False

    def search(self, queryset: QuerySet, term: str) -> QuerySet:
        raise NotImplementedError


def pretty_body(raw: bytes) -> str:
    """The body as D1 sent it: pretty-printed when it is JSON, else decoded as far as it goes."""
    try:
        return pretty_json(schema.loads(raw))
    except (ValueError, RecursionError):  # not JSON, or too deep to read or to indent again
        return raw.decode("utf-8", errors="replace")


class _FixedChoicesFilter(admin.SimpleListFilter):
    """A filter whose choices are known without asking the database."""

    def choices(self, changelist):
        # A value given in the URL that is not among the choices is still shown as selected.
        known = {str(value) for value, _label in self.lookup_choices}
        if self.value() and self.value() not in known:
            self.lookup_choices = [*self.lookup_choices, (self.value(), self.value())]
        yield from super().choices(changelist)


class IssuerFilter(_FixedChoicesFilter):
    title = _("issuer")
    parameter_name = "issuer"

    def lookups(self, request, model_admin):
        return [(issuer, issuer) for issuer in settings.D1_ISSUER_IDS]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        return queryset.filter(issuer_id=self.value()) if self.value() else queryset


class StageFilter(_FixedChoicesFilter):
    title = _("stage")
    parameter_name = "stage"

    def lookups(self, request, model_admin):
        return [(stage, stage) for stage in lifecycle.KNOWN] + [("none", _("no stage yet"))]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        return queryset.filter(stage="" if self.value() == "none" else self.value())


class SiteFilter(_FixedChoicesFilter):
    title = _("production site")
    parameter_name = "site"

    def lookups(self, request, model_admin):
        return [(site, site) for site in settings.TRACKER_PRODUCTION_SITES]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        return queryset.filter(production_site=self.value()) if self.value() else queryset


class _YesNoFilter(admin.SimpleListFilter):
    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def condition(self) -> Q:
        raise NotImplementedError

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return queryset


class UnrecognizedFilter(_YesNoFilter):
    title = _("unrecognized status")
    parameter_name = "unrecognized"

    def condition(self) -> Q:
        return ~Q(unrecognized_status="")


class MutedFilter(_YesNoFilter):
    title = _("acknowledged or snoozed")
    parameter_name = "muted"

    def condition(self) -> Q:
        return Q(muted_until__gt=timezone.now())

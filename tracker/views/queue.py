"""The supervisors' work queue (`/stuck/`): the table, its overview, its actions and its export."""

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from tracker import attention, charts, pan, stages
from tracker import queue as work_queue
from tracker.attention import Reason
from tracker.models import CardOrder, ExportAudit, RecheckBatch
from tracker.reconcile import sweep
from tracker.templatetags.tracker import ago, local_minute
from tracker.views import HtmxHttpRequest
from tracker.views.forms import AcknowledgeForm, QueueFilterForm, RecheckForm


def _overview_charts(overview: dict) -> dict:
    # Absolute links: the overview is also a page of its own (without JavaScript).
    def link(**query: str) -> str:
        return f"{reverse('tracker:queue')}?{urlencode(query)}"

    reasons = [
        (label, overview["reasons"][value], link(reason=value)) for value, label in Reason.choices
    ]
    ages = [(name, overview["ages"][name], link(age=name)) for name, *_ in work_queue.AGE_BUCKETS]
    funnel = [
        (stages.stage_situation(stage).label, total, link(stage=stage))
        for stage, total, _ in overview["funnel"]
    ]
    return {
        "reasons": charts.horizontal(reasons),
        "ages": charts.vertical(ages),
        "funnel": charts.horizontal(
            funnel, extra=[needing for _, _, needing in overview["funnel"]]
        ),
    }


@dataclass(frozen=True)
class _RowView:
    """One queue row ready to print: the table has 50 of them, so the template only outputs."""

    pk: int
    card_id: str
    issuer_id: str
    card_url: str
    stage: stages.Situation
    unrecognized_status: str
    reasons: list[Reason]
    due: str
    last_event_at: datetime | None
    last_event_ago: str
    site: str
    acknowledgement: str


def _row_views(page: work_queue.Page) -> list[_RowView]:
    views = []
    for row in page.rows:
        order, ack = row.order, row.acknowledgement
        if order.due_at:
            due = local_minute(order.due_at)
        else:
            due = order.due_date.isoformat() if order.due_date else "—"
        views.append(
            _RowView(
                pk=order.pk,
                card_id=order.card_id,
                issuer_id=order.issuer_id,
                card_url=reverse("tracker:card_detail", args=[order.issuer_id, order.card_id]),
                stage=stages.stage_situation(order.stage),
                unrecognized_status=order.unrecognized_status,
                reasons=row.reasons,
                due=due,
                last_event_at=order.last_event_at,
                last_event_ago=ago(order.last_event_at, page.now),
                site=order.production_site or "—",
                acknowledgement=_acknowledgement_text(ack) if ack else "",
            )
        )
    return views


def _acknowledgement_text(ack) -> str:
    text = _("%(kind)s by %(who)s on %(when)s") % {
        "kind": ack.get_kind_display(),
        "who": ack.user,
        "when": local_minute(ack.created_at),
    }
    return f"{text}: {ack.note}" if ack.note else text


class _Echo:
    def write(self, value: str) -> str:
        return value


# A spreadsheet runs a cell that starts like a formula (CSV injection): such a cell is
# exported with a leading quote, which spreadsheets show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class _InertWriter:
    def __init__(self) -> None:
        self.writer = csv.writer(_Echo())

    def writerow(self, row: list) -> str:
        return self.writer.writerow([_inert(value) for value in row])


def _csv_lines(orders: Iterator[CardOrder], now: datetime, audit: ExportAudit) -> Iterator[str]:
    writer = _InertWriter()
    yield writer.writerow(
        ["issuer_id", "card_id", "stage", "reasons", "operation_status", "unrecognized_status",
         "due_date", "late_after", "last_event_at", "production_site", "carrier",
         "tracking_number", "shipment_status", "issuer_request_id", "muted_until"]
    )  # fmt: skip
    rows = 0
    for order in orders:
        yield writer.writerow(
            [
                order.issuer_id,
                order.card_id,
                order.stage,
                ";".join(attention.reasons(order, now)),
                order.operation_status,
                order.unrecognized_status,
                order.due_date or "",
                order.late_after.isoformat() if order.late_after else "",
                order.last_event_at.isoformat() if order.last_event_at else "",
                order.production_site,
                order.carrier,
                order.tracking_number,
                order.shipment_status,
                order.issuer_request_id,
                order.muted_until.isoformat() if order.muted_until else "",
            ]
        )
        rows += 1
    ExportAudit.objects.filter(pk=audit.pk).update(rows=rows)


def _back_to_queue(request: HttpRequest) -> HttpResponse:
    return HttpResponseRedirect(_queue_url(request, request.POST.get("next", "")))


def _queue_url(request: HttpRequest, wanted: str) -> str:
    """Where to go back to: a path on this site (the queue with its filters), else the queue."""
    if wanted.startswith("/") and url_has_allowed_host_and_scheme(wanted, {request.get_host()}):
        return wanted
    return reverse("tracker:queue")


@require_GET
@permission_required("tracker.work_queue", raise_exception=True)
def queue(request: HtmxHttpRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET)
    filters = form.filters()
    page = work_queue.orders(filters, cursor=form.cursor)
    template = "tracker/queue.html"
    partial = bool(request.htmx and request.htmx.target == "queue-table")
    if partial:
        template += "#queue-table"
    context = {
        "form": form,
        "filters": filters,
        "page": page,
        "rows": _row_views(page),
        "query": urlencode(filters.as_query()),
        "next_query": urlencode(filters.as_query(after=page.next_cursor))
        if page.next_cursor
        else "",
        "recheck_max": settings.TRACKER_RECHECK_MAX,
        # The drift report: did the last sweeps find orders D1 knew more about?
        "sweeps": [] if partial else sweep.recent(),
    }
    return render(request, template, context)


@require_GET
@permission_required("tracker.work_queue", raise_exception=True)
def queue_overview(request: HtmxHttpRequest) -> HttpResponse:
    overview = work_queue.overview()
    template = (
        "tracker/queue.html#queue-overview" if request.htmx else "tracker/queue_overview.html"
    )
    return render(request, template, {"overview": overview, "charts": _overview_charts(overview)})


@require_GET
@permission_required("tracker.export_orders", raise_exception=True)
def queue_export(request: HttpRequest) -> StreamingHttpResponse:
    filters = QueueFilterForm(request.GET).filters()
    now = timezone.now()
    audit = ExportAudit.objects.create(
        user=request.user,
        username=request.user.get_username(),
        filters=pan.mask_pans(urlencode(filters.as_query())),
    )
    response = StreamingHttpResponse(
        _csv_lines(work_queue.export_rows(filters, now), now, audit),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="stuck-orders-{now:%Y%m%d-%H%M}.csv"'
    return response


@require_GET
@permission_required("tracker.work_queue", raise_exception=True)
def queue_timeline(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(CardOrder.objects.only("pk"), pk=order_id)
    if request.GET.get("hide"):
        return render(request, "tracker/queue.html#row-detail", {"order": order, "open": False})
    shown = ("received_at", "status", "shipment_status", "source", "verdict", "note")
    events = order.events.only("order_id", *shown).order_by("-received_at", "-id")[:50]
    context = {"order": order, "events": events, "open": True}
    return render(request, "tracker/queue.html#row-detail", context)


@require_http_methods(["GET", "POST"])
@permission_required("tracker.work_queue", raise_exception=True)
def queue_acknowledge(request: HtmxHttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(CardOrder, pk=order_id)
    if request.method == "GET":
        return _acknowledge_form(request, order)
    form = AcknowledgeForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        if request.htmx:
            return HttpResponse(errors, status=422)
        messages.error(request, errors)
        return _back_to_queue(request)
    _mute(order, request.user, form.cleaned_data)
    if not request.htmx:
        messages.success(request, _("%(card)s: done.") % {"card": order.card_id})
        return _back_to_queue(request)
    response = HttpResponse("")  # the row leaves the table
    return trigger_client_event(response, "queue-changed")


def _acknowledge_form(request: HtmxHttpRequest, order: CardOrder) -> HttpResponse:
    # The form comes on demand: rendering one per row would cost the table dearly.
    template = "tracker/acknowledge.html"
    if request.htmx:
        template += "#acknowledge-form"
    back = _queue_url(request, request.GET.get("next", ""))
    return render(request, template, {"order": order, "next": back})


def _mute(order: CardOrder, user, data: dict) -> None:
    if data["action"] == "acknowledge":
        work_queue.acknowledge(order, user, data["note"])
    elif data["action"] == "snooze":
        # Snoozed to the end of the chosen day, in the supervisor's time zone.
        until = timezone.make_aware(datetime.combine(data["until"], time.max))
        work_queue.snooze(order, user, until, data["note"])
    else:
        work_queue.reopen(order, user, data["note"])


@require_POST
@permission_required("tracker.recheck_orders", raise_exception=True)
def queue_recheck(request: HtmxHttpRequest) -> HttpResponse:
    form = RecheckForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.non_field_errors()))
        return _back_to_queue(request)
    if form.cleaned_data["everything"]:
        filters = QueueFilterForm(request.POST).filters()
        orders = work_queue.matching(filters)
    else:
        orders = CardOrder.objects.filter(pk__in=form.cleaned_data["order"]).order_by("pk")
    batch = work_queue.start_recheck(orders, request.user, settings.TRACKER_RECHECK_MAX)
    if request.htmx:
        return render(request, "tracker/queue.html#recheck-progress", {"batch": batch})
    return redirect("tracker:recheck_progress", batch.pk)


@require_GET
@permission_required("tracker.recheck_orders", raise_exception=True)
def recheck_progress(request: HtmxHttpRequest, batch_id: int) -> HttpResponse:
    batch = get_object_or_404(RecheckBatch, pk=batch_id)
    template = "tracker/queue.html#recheck-progress" if request.htmx else "tracker/recheck.html"
    return render(request, template, {"batch": batch})

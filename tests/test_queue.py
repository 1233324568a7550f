import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from tests.conftest import ISSUER, op, staff
from tracker import attention, ingest, queue, roles
from tracker.attention import Reason
from tracker.models import Acknowledgement, CardOrder, Source, Threshold

pytestmark = pytest.mark.django_db

STUCK = "/stuck/"


@pytest.fixture
def supervisor(client) -> User:
    user = staff(roles.SUPERVISORS, "sue")
    client.force_login(user)
    return user


def receive(stage: str, card: str, at: datetime | None = None, **overrides) -> CardOrder:
    at = at or timezone.now() - timedelta(days=10)
    ingest.apply(ISSUER, op(stage, cardId=card, **overrides), Source.NOTIFICATION, received_at=at)
    return CardOrder.objects.get(card_id=card)


def a_queue() -> dict[str, CardOrder]:
    """One order per reason, plus two that need nothing."""
    old = timezone.now() - timedelta(days=10)
    orders = {
        "late": receive(
            "CARD_PROD_DONE", "crd-late", at=timezone.now(), details__dueDate="2020-01-01"
        ),
        "silent": receive("CARD_PROD_ONGOING", "crd-silent", at=old),
        "exception": receive("DATA_EXCEPTION", "crd-exception", status="FAILED"),
        "unrecognized": receive("CARD_PROD_ON_HOLD", "crd-held", at=timezone.now()),
        "carrier": receive(
            "CARD_SHIPPED",
            "crd-carrier",
            at=timezone.now(),
            status="SUCCESSFUL",
            details__shipment={"status": "Exception", "trackingNumber": "T1"},
        ),
        "fine": receive(
            "CARD_PROD_READY", "crd-fine", at=timezone.now(), details__dueDate="2999-01-01"
        ),
        "canceled": receive("CARD_PROD_CANCELED", "crd-canceled", status="FAILED"),
    }
    registered = CardOrder(issuer_id=ISSUER, card_id="crd-registered", first_seen_at=old)
    attention.update(registered)
    registered.save()
    orders["never"] = registered
    return orders


def cards_on(response) -> list[str]:
    return [row.order.card_id for row in response.context["page"].rows]


def test_agents_get_403_and_strangers_the_login_page(client):
    client.force_login(staff(roles.AGENTS, "amy"))
    assert client.get(STUCK).status_code == 403
    assert client.get(reverse("tracker:queue_export")).status_code == 403
    client.logout()
    response = client.get(STUCK)
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_the_queue_lists_every_order_needing_attention_with_its_reasons(client, supervisor):
    a_queue()
    response = client.get(STUCK)
    assert response.status_code == 200
    rows = {row.order.card_id: row.reasons for row in response.context["page"].rows}
    assert rows == {
        "crd-late": [Reason.LATE],
        "crd-silent": [Reason.SILENT],
        "crd-exception": [Reason.EXCEPTION],
        "crd-held": [Reason.UNRECOGNIZED],
        "crd-carrier": [Reason.CARRIER_PROBLEM],
        "crd-registered": [Reason.NEVER_HEARD],
    }
    assert "crd-fine" not in response.content.decode()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("reason=late", ["crd-late"]),
        ("reason=never_heard", ["crd-registered"]),
        ("stage=DATA_EXCEPTION", ["crd-exception"]),
        ("stage=none", ["crd-held", "crd-registered"]),
        ("age=7%2B", ["crd-silent", "crd-exception", "crd-registered"]),
        ("age=0-1", ["crd-late", "crd-held", "crd-carrier"]),
        (f"issuer={ISSUER}&reason=exception", ["crd-exception"]),
        ("site=PC-NOWHERE", []),
    ],
)
def test_filters_narrow_the_queue(client, supervisor, query, expected):
    a_queue()
    assert sorted(cards_on(client.get(f"{STUCK}?{query}"))) == sorted(expected)


def test_a_bad_filter_value_is_named_and_ignored(client, supervisor):
    a_queue()
    response = client.get(f"{STUCK}?reason=bored&after=!!!")
    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert len(cards_on(response)) == 6


def test_the_htmx_request_gets_only_the_table(client, supervisor):
    a_queue()
    response = client.get(
        f"{STUCK}?reason=late", headers={"HX-Request": "true", "HX-Target": "queue-table"}
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="queue-table"')
    assert "crd-late" in html and "<html" not in html


@pytest.fixture
def many_orders() -> list[CardOrder]:
    """A few thousand orders needing attention, made directly for speed."""
    now = timezone.now()
    orders = []
    for n in range(2400):
        order = CardOrder(
            issuer_id=ISSUER,
            card_id=f"crd-many-{n:05d}",
            stage="CARD_PROD_ONGOING",
            stage_rank=40,
            production_site=("PC-A", "PC-B")[n % 2],
            last_event_at=now - timedelta(days=5, minutes=n % 700),
            first_seen_at=now - timedelta(days=6),
            late_after=None if n % 3 == 0 else now - timedelta(hours=n % 500),
        )
        attention.update(order)
        orders.append(order)
    return CardOrder.objects.bulk_create(orders)


@pytest.mark.parametrize("sort", ["attention", "due", "silence", "card"])
@pytest.mark.parametrize("descending", [False, True])
def test_keyset_pages_cover_every_order_once_in_sort_order(many_orders, sort, descending):
    filters = queue.Filters(site="PC-A", sort=sort, descending=descending)
    seen, cursor = [], ""
    while True:
        page = queue.orders(filters, cursor=cursor)
        seen += [row.order for row in page.rows]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    expected = list(queue.matching(filters))
    assert [o.pk for o in seen] == [o.pk for o in expected]
    assert len(seen) == 1200 == len({o.pk for o in seen})
    column = queue.SORTS[sort][0]
    values = [getattr(o, column) for o in seen if getattr(o, column) is not None]
    assert values == sorted(values, reverse=descending)


def test_the_next_page_link_carries_the_filter(client, supervisor, many_orders):
    response = client.get(f"{STUCK}?site=PC-B&sort=due")
    next_query = response.context["next_query"]
    assert "site=PC-B" in next_query and "sort=due" in next_query and "after=" in next_query
    second = client.get(f"{STUCK}?{next_query}")
    first_cards, second_cards = set(cards_on(response)), set(cards_on(second))
    assert len(second_cards) == 50 and not first_cards & second_cards


def acknowledge(client, order: CardOrder, **data) -> None:
    url = reverse("tracker:queue_acknowledge", args=[order.pk])
    response = client.post(url, data, headers={"HX-Request": "true"})
    assert response.status_code == 200, response.content


def test_an_acknowledged_order_leaves_the_queue_until_its_state_changes(client, supervisor):
    orders = a_queue()
    acknowledge(client, orders["silent"], action="acknowledge", note="Site is on it")
    assert "crd-silent" not in cards_on(client.get(STUCK))
    muted = client.get(f"{STUCK}?show=muted")
    assert cards_on(muted) == ["crd-silent"]
    assert "sue" in muted.content.decode() and "Site is on it" in muted.content.decode()
    ack = Acknowledgement.objects.get()
    assert (ack.user, ack.kind, ack.note) == (supervisor, "acknowledge", "Site is on it")
    receive("CARD_PROD_DONE", "crd-silent", at=timezone.now() - timedelta(days=5))
    assert "crd-silent" in cards_on(client.get(STUCK))


def test_acknowledging_needs_a_note(client, supervisor):
    orders = a_queue()
    url = reverse("tracker:queue_acknowledge", args=[orders["late"].pk])
    response = client.post(url, {"action": "acknowledge"}, headers={"HX-Request": "true"})
    assert response.status_code == 422 and "Say why" in response.content.decode()
    assert not Acknowledgement.objects.exists()


def test_a_snoozed_order_comes_back_after_its_date_or_on_a_state_change(client, supervisor):
    orders = a_queue()
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    acknowledge(client, orders["exception"], action="snooze", until=tomorrow, note="")
    acknowledge(client, orders["late"], action="snooze", until=tomorrow, note="")
    assert not {"crd-exception", "crd-late"} & set(cards_on(client.get(STUCK)))
    in_two_days = timezone.now() + timedelta(days=2)
    back = queue.orders(queue.Filters(), now=in_two_days)
    assert {"crd-exception", "crd-late"} <= {row.order.card_id for row in back.rows}
    receive("CARD_SHIPPED", "crd-late", at=timezone.now(), status="SUCCESSFUL")
    assert CardOrder.objects.get(card_id="crd-late").muted_until is None


def test_a_reopened_order_is_back_at_once(client, supervisor):
    orders = a_queue()
    acknowledge(client, orders["silent"], action="acknowledge", note="known")
    acknowledge(client, orders["silent"], action="reopen")
    assert "crd-silent" in cards_on(client.get(STUCK))
    assert list(Acknowledgement.objects.values_list("kind", flat=True).order_by("id")) == [
        "acknowledge",
        "reopen",
    ]


def test_without_javascript_an_acknowledgement_redirects_back_to_the_filtered_queue(
    client, supervisor
):
    orders = a_queue()
    url = reverse("tracker:queue_acknowledge", args=[orders["late"].pk])
    response = client.post(
        url, {"action": "acknowledge", "note": "ok", "next": "/stuck/?reason=late"}
    )
    assert response.status_code == 302 and response.url == "/stuck/?reason=late"
    evil = client.post(url, {"action": "reopen", "next": "https://evil.example/"})
    assert evil.url == "/stuck/"


def test_the_export_streams_the_current_filter_as_csv(client, supervisor):
    a_queue()
    response = client.get(reverse("tracker:queue_export") + "?reason=exception")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["card_id"], r["stage"], r["reasons"]) for r in rows] == [
        ("crd-exception", "DATA_EXCEPTION", "exception")
    ]


def test_the_overview_counts_reasons_stages_ages_and_the_funnel(client, supervisor):
    a_queue()
    response = client.get(reverse("tracker:queue_overview"), headers={"HX-Request": "true"})
    overview = response.context["overview"]
    assert overview["total"] == 6
    assert overview["reasons"] == {
        "late": 1, "silent": 1, "exception": 1, "unrecognized": 1, "conflict": 0,
        "no_carrier_movement": 0, "carrier_problem": 1, "never_heard": 1,
    }  # fmt: skip
    assert sum(overview["ages"].values()) == 6
    funnel = {stage: (total, stuck) for stage, total, stuck in overview["funnel"]}
    assert funnel["CARD_PROD_ONGOING"] == (1, 1) and funnel["CARD_PROD_READY"] == (1, 0)
    html = response.content.decode()
    assert "<svg" in html and "<script" not in html
    assert 'href="/stuck/?reason=late"' in html, html


def test_editing_a_threshold_in_the_admin_takes_effect(
    client, settings, django_capture_on_commit_callbacks
):
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    settings.D1_WORKING_DAYS = frozenset(range(7))
    attention.forget_thresholds()
    five_hours_ago = timezone.now() - timedelta(hours=5)
    receive("CARD_PROD_ONGOING", "crd-ongoing", at=five_hours_ago)
    assert "crd-ongoing" not in [r.order.card_id for r in queue.orders(queue.Filters()).rows]
    admin = staff(roles.ADMINISTRATORS, "ada")
    client.force_login(admin)
    threshold = Threshold.objects.get(name="CARD_PROD_ONGOING")
    url = reverse("admin:tracker_threshold_change", args=[threshold.pk])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(url, {"hours": "4"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert len(callbacks) == 1  # the recompute task, run at once by the immediate backend
    attention.forget_thresholds()
    rows = queue.orders(queue.Filters()).rows
    assert [(r.order.card_id, r.reasons) for r in rows] == [("crd-ongoing", [Reason.SILENT])]


def test_supervisors_see_thresholds_but_cannot_change_them(client, supervisor):
    threshold = Threshold.objects.get(name="CARD_PROD_ONGOING")
    url = reverse("admin:tracker_threshold_change", args=[threshold.pk])
    assert client.get(url).status_code == 200
    client.post(url, {"hours": "1"})
    threshold.refresh_from_db()
    assert threshold.hours == 12


def test_times_are_compared_as_instants(many_orders):
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    assert all(row.reasons for row in queue.orders(queue.Filters(), now=fixed).rows)


def test_the_acknowledge_form_comes_on_demand_with_and_without_javascript(client, supervisor):
    orders = a_queue()
    url = reverse("tracker:queue_acknowledge", args=[orders["late"].pk])
    fragment = client.get(url + "?next=/stuck/%3Freason%3Dlate", headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert html.lstrip().startswith('<form class="ack-form"') and "<html" not in html
    assert 'name="next" value="/stuck/?reason=late"' in html
    page = client.get(url + "?next=https://evil.example/").content.decode()
    assert "<html" in page
    assert 'name="next" value="/stuck/"' in page and 'href="https://evil' not in page


def test_an_ended_snooze_is_woken_so_the_indexed_queue_sees_the_order(client, supervisor):
    orders = a_queue()
    CardOrder.objects.filter(pk=orders["late"].pk).update(
        muted_until=timezone.now() - timedelta(minutes=1)
    )
    assert "crd-late" in cards_on(client.get(STUCK))
    assert CardOrder.objects.get(pk=orders["late"].pk).muted_until is None

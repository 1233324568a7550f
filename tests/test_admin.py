"""The admin site: corrections with a reason, their history and revert, actions, roles, costs."""

import threading
import time
from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection, transaction
from django.forms import BooleanField
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from pytest_django.asserts import assertContains, assertNotContains

from tests.conftest import ISSUER, make_order, op, staff
from tracker import attention, corrections, ingest, queue, roles
from tracker.admin import common
from tracker.admin.forms import CardOrderForm
from tracker.models import Acknowledgement, CardOrder, LookupAudit, Source, TimelineEvent

pytestmark = pytest.mark.django_db
# Skipped before the database is set up: a transactional test flushes it even when it skips.
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (row locks outside a test transaction)",
)

Correction = corrections.Correction
CHANGELIST = reverse("admin:tracker_cardorder_changelist")


@pytest.fixture
def administrator(client) -> User:
    user = staff(roles.ADMINISTRATORS, "ada")
    client.force_login(user)
    user.get_all_permissions()  # warm the shared permission cache, as any earlier page would
    return user


@pytest.fixture
def supervisor(client) -> User:
    user = staff(roles.SUPERVISORS, "sue")
    client.force_login(user)
    return user


def shipped_order(due: str = "2030-01-10", **overrides: Any) -> CardOrder:
    """An order as the ingest leaves it after CARD_PROD_DONE, with its timeline."""
    ingest.apply(
        ISSUER,
        op("CARD_PROD_DONE", cardId="crd-admin-1", details__dueDate=due),
        Source.NOTIFICATION,
        received_at=timezone.now() - timedelta(days=2),
    )
    order = CardOrder.objects.get(card_id="crd-admin-1")
    if overrides:
        CardOrder.objects.filter(pk=order.pk).update(**overrides)
        order.refresh_from_db()
    return order


def change_url(order: CardOrder) -> str:
    return reverse("admin:tracker_cardorder_change", args=[order.pk])


def form_data(order: CardOrder, **changes: Any) -> dict[str, Any]:
    """The change form as the browser would post it, loaded now, with these fields edited."""
    form = CardOrderForm(instance=order)
    data = {"_save": "Save"}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if isinstance(field, BooleanField):
            if value:
                data[name] = "on"
        else:
            data[name] = "" if value is None else value
    for name, value in changes.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    return data


def correct_by_form(client, order: CardOrder, **changes: Any):
    return client.post(change_url(order), form_data(order, **changes))


# --- Corrections ----------------------------------------------------------------------------


def test_a_correction_without_a_reason_is_refused_and_nothing_is_saved(client, administrator):
    order = shipped_order()
    response = correct_by_form(client, order, stage="CARD_SHIPPED", change_reason="")
    assert response.status_code == 200
    assert "change_reason" in response.context["adminform"].form.errors
    order.refresh_from_db()
    assert order.stage == "CARD_PROD_DONE"
    assert not Correction.objects.exists()
    assert not TimelineEvent.objects.filter(source=Source.ADMIN).exists()


def test_a_correction_is_recorded_with_who_when_why_and_each_field_and_shown_on_the_card(
    client, administrator
):
    order = shipped_order()
    response = correct_by_form(
        client,
        order,
        stage="CARD_SHIPPED",
        tracking_number="TRK-123",
        change_reason="D1 support confirmed the card left the site on 3 March.",
    )
    assert response.status_code == 302, response.context["adminform"].form.errors

    order.refresh_from_db()
    assert (order.stage, order.stage_rank, order.terminal) == ("CARD_SHIPPED", 60, True)
    assert order.tracking_number == "TRK-123"
    record = Correction.objects.get()
    assert record.history_user == administrator
    assert record.history_change_reason.startswith("D1 support confirmed")
    assert record.changes == {
        "stage": ["CARD_PROD_DONE", "CARD_SHIPPED"],
        "tracking_number": ["", "TRK-123"],
    }
    assert timezone.now() - record.history_date < timedelta(minutes=1)

    event = TimelineEvent.objects.get(source=Source.ADMIN)
    assert (event.verdict, event.user, event.order_id) == ("applied", administrator, order.pk)
    assert event.note == (
        "D1 support confirmed the card left the site on 3 March.\n"
        "stage: CARD_PROD_DONE → CARD_SHIPPED\n"
        "tracking number: — → TRK-123"
    )
    card_page = client.get(reverse("tracker:card_detail", args=[ISSUER, order.card_id]))
    assertContains(card_page, "Administrator's change")
    assertContains(card_page, "Note by ada:")
    assertContains(card_page, "stage: CARD_PROD_DONE → CARD_SHIPPED<br>")


def test_a_correction_recomputes_attention_and_ends_the_queue_mute(client, administrator):
    order = shipped_order(due="2020-01-01", muted_until=queue.FOREVER)
    assert order.late_after is not None and order.is_late()
    response = correct_by_form(
        client, order, due_date="2099-01-01", change_reason="New due date agreed with D1."
    )
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.muted_until is None
    assert order.due_at is None and order.late_after.date() >= date(2099, 1, 1)
    assert not order.is_late()
    assert order.state_changed_at is not None
    expected = CardOrder.objects.get(pk=order.pk)
    attention.update(expected)
    assert (order.silent_after, order.attention_since) == (
        expected.silent_after,
        expected.attention_since,
    )


def test_a_correction_of_references_only_keeps_the_queue_acknowledgement(administrator):
    order = shipped_order(muted_until=queue.FOREVER)
    corrections.correct(order.pk, {"customer_reference": "CUST-1"}, administrator, "From the CRM.")
    order.refresh_from_db()
    assert (order.customer_reference, order.muted_until) == ("CUST-1", queue.FOREVER)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_correction_waits_for_a_delivery_in_progress_and_builds_on_it():
    ingest.apply(ISSUER, op("CARD_PROD_READY", cardId="crd-race"), Source.NOTIFICATION)
    order = CardOrder.objects.get(card_id="crd-race")
    user = User.objects.create_user("racer")
    locked, errors = threading.Event(), []

    def deliver() -> None:
        try:
            with transaction.atomic():
                # The ingest's lock, held while D1's news is applied.
                CardOrder.objects.select_for_update().get(pk=order.pk)
                locked.set()
                time.sleep(0.5)
                ingest.apply(ISSUER, op("CARD_SHIPPED", cardId="crd-race"), Source.NOTIFICATION)
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)
        finally:
            connection.close()

    thread = threading.Thread(target=deliver)
    thread.start()
    assert locked.wait(5)
    started = time.monotonic()
    corrections.correct(order.pk, {"due_date": date(2099, 1, 1)}, user, "Agreed with D1.")
    waited = time.monotonic() - started
    thread.join()
    assert errors == []
    assert waited > 0.3
    order.refresh_from_db()
    assert (order.stage, order.terminal, order.due_date) == ("CARD_SHIPPED", True, date(2099, 1, 1))
    expected = CardOrder.objects.get(pk=order.pk)
    attention.update(expected)
    assert order.attention_since == expected.attention_since


def test_a_correction_loaded_before_news_from_d1_is_refused(client, administrator):
    order = shipped_order()
    stale_form = form_data(order, tracking_number="TRK-1", change_reason="Carrier's number.")
    ingest.apply(ISSUER, op("CARD_SHIPPED", cardId=order.card_id), Source.NOTIFICATION)
    response = client.post(change_url(order), stale_form)
    assert response.status_code == 200
    assertContains(response, "This order changed while you were editing it")
    order.refresh_from_db()
    assert (order.stage, order.tracking_number) == ("CARD_SHIPPED", "")
    assert not Correction.objects.exists()


def test_saving_without_a_change_records_nothing(client, administrator):
    order = shipped_order()
    response = correct_by_form(client, order, change_reason="Just looking.")
    assertContains(response, "Nothing to change")
    assert not Correction.objects.exists()


def test_a_card_number_in_the_reason_is_refused(client, administrator):
    order = shipped_order()
    response = correct_by_form(
        client, order, carrier="dhl", change_reason="Customer 4111 1111 1111 1111 called."
    )
    assertContains(response, "looks like a card number")
    assert not Correction.objects.exists()


def test_history_keeps_the_identity_and_correctable_fields_only():
    tracked = {field.name for field in Correction.tracked_fields}
    assert tracked == {"id", "issuer_id", "card_id", *CardOrder.CORRECTABLE}
    free_texts = {"shipment", "shipment_message", "tracking_url", "error", "reason"}
    assert not tracked & free_texts


def test_the_ingest_writes_no_history():
    order = shipped_order()
    ingest.apply(ISSUER, op("CARD_SHIPPED", cardId=order.card_id), Source.NOTIFICATION)
    make_order(card_id="crd-saved-by-hand").save()
    assert not Correction.objects.exists()


# --- History and revert ---------------------------------------------------------------------


def test_revert_needs_a_reason_then_restores_the_fields_and_lands_on_the_timeline(
    client, administrator
):
    order = shipped_order()
    correct_by_form(client, order, stage="CARD_SHIPPED", change_reason="Wrongly thought shipped.")
    change = Correction.objects.get()
    url = reverse("admin:tracker_cardorder_revert", args=[order.pk, change.history_id])

    page = client.get(url)
    assertContains(page, "Wrongly thought shipped.")
    assertContains(page, "CARD_PROD_DONE")
    refused = client.post(url, {"reason": ""})
    assert refused.status_code == 200 and refused.context["form"].errors
    assert Correction.objects.count() == 1

    response = client.post(url, {"reason": "D1 says it is still at the site."}, follow=True)
    assertContains(response, f"Change #{change.history_id} reverted")
    order.refresh_from_db()
    assert (order.stage, order.terminal, order.stage_rank) == ("CARD_PROD_DONE", False, 50)
    undo = Correction.objects.latest("history_id")
    assert undo.reverts == change.history_id
    assert undo.changes == {"stage": ["CARD_SHIPPED", "CARD_PROD_DONE"]}
    event = TimelineEvent.objects.filter(source=Source.ADMIN).latest("id")
    assert event.note.startswith(
        f"Revert of change #{change.history_id}: D1 says it is still at the site."
    )
    assert event.user == administrator

    history = client.get(reverse("admin:tracker_cardorder_history", args=[order.pk]))
    assertContains(history, f"reverted by #{undo.history_id}")
    assertContains(history, "Wrongly thought shipped.")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_correct_and_revert_outside_a_test_transaction(client):
    # As in production, where only the change form runs in a transaction of its own.
    from django.apps import apps

    roles.sync_groups(apps)  # a transactional test's flush empties the groups
    client.force_login(staff(roles.ADMINISTRATORS, "ada"))
    order = shipped_order()
    response = correct_by_form(client, order, carrier="dhl", change_reason="Named by D1.")
    assert response.status_code == 302
    change = Correction.objects.get()
    url = reverse("admin:tracker_cardorder_revert", args=[order.pk, change.history_id])
    assert client.post(url, {"reason": "Not this card."}).status_code == 302
    order.refresh_from_db()
    assert order.carrier == "" and Correction.objects.count() == 2


def test_supervisors_read_the_history_but_cannot_revert(client, supervisor):
    order = shipped_order()
    admin_user = staff(roles.ADMINISTRATORS, "ada")
    change = corrections.correct(order.pk, {"carrier": "dhl"}, admin_user, "Carrier named by D1.")
    history = client.get(reverse("admin:tracker_cardorder_history", args=[order.pk]))
    assertContains(history, "Carrier named by D1.")
    assertNotContains(history, "Revert…")
    url = reverse("admin:tracker_cardorder_revert", args=[order.pk, change.history_id])
    assert client.get(url).status_code == 403
    assert client.post(url, {"reason": "no"}).status_code == 403
    order.refresh_from_db()
    assert order.carrier == "dhl"


# --- Actions --------------------------------------------------------------------------------


def run_action(client, action: str, orders, **extra):
    data = {"action": action, "_selected_action": [o.pk for o in orders], "index": 0, **extra}
    return client.post(CHANGELIST, data, follow=True)


def test_resync_enqueues_one_task_per_order_after_commit(
    client, administrator, django_capture_on_commit_callbacks
):
    orders = [make_order(card_id=f"crd-sync-{n}") for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "resync", orders[:2])
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Asked D1 again about 2 orders")
    tasks = DBTaskResult.objects.all()
    assert sorted(task.args_kwargs["kwargs"]["card_id"] for task in tasks) == [
        "crd-sync-0",
        "crd-sync-1",
    ]
    assert {task.task_path for task in tasks} == {"tracker.tasks.refresh_card"}


def test_resync_refuses_more_than_the_limit_and_enqueues_nothing(
    client, administrator, settings, django_capture_on_commit_callbacks
):
    settings.TRACKER_RECHECK_MAX = 1
    orders = [make_order(card_id=f"crd-sync-{n}") for n in range(2)]
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "resync", orders)
    assertContains(response, "Select at most 1 orders")
    assert not DBTaskResult.objects.exists()


def test_mark_resolved_asks_for_a_note_then_acknowledges_each_order_with_it(client, administrator):
    orders = [make_order(card_id=f"crd-res-{n}") for n in range(2)]
    page = run_action(client, "mark_resolved", orders)
    assertContains(page, "Mark 2 orders resolved?")
    assert not Acknowledgement.objects.exists()

    no_note = run_action(client, "mark_resolved", orders, confirm="yes", note="")
    assert no_note.context["form"].errors
    assert not Acknowledgement.objects.exists()

    done = run_action(client, "mark_resolved", orders, confirm="yes", note="Reissued as crd-x.")
    assertContains(done, "Marked 2 orders resolved.")
    acknowledgements = Acknowledgement.objects.all()
    assert [(a.kind, a.user, a.note) for a in acknowledgements] == [
        ("acknowledge", administrator, "Reissued as crd-x.")
    ] * 2
    assert all(o.muted_until == queue.FOREVER for o in CardOrder.objects.all())
    notes = TimelineEvent.objects.filter(source=Source.ADMIN).values_list("note", flat=True)
    assert list(notes) == ["Marked resolved: Reissued as crd-x."] * 2


def test_deleting_orders_is_offered_to_nobody(client, administrator):
    order = make_order()
    page = client.get(CHANGELIST)
    assertNotContains(page, 'value="delete_selected"')
    assert client.get(reverse("admin:tracker_cardorder_delete", args=[order.pk])).status_code == 403
    superuser = User.objects.create_superuser("root", password="pw")
    client.force_login(superuser)
    assert client.post(reverse("admin:tracker_cardorder_delete", args=[order.pk])).status_code == (
        403
    )
    assert CardOrder.objects.filter(pk=order.pk).exists()


# --- Roles ----------------------------------------------------------------------------------


def codenames(group: str) -> set[str]:
    permissions = Permission.objects.filter(group__name=group).select_related("content_type")
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def test_each_role_holds_exactly_its_permissions():
    agents = codenames(roles.AGENTS)
    supervisors = codenames(roles.SUPERVISORS)
    administrators = codenames(roles.ADMINISTRATORS)
    assert agents == {
        "tracker.view_cardorder",
        "tracker.view_timelineevent",
        "tracker.refresh_live",
    }
    views = Permission.objects.filter(
        codename__startswith="view_",
        content_type__app_label__in=["tracker", "auth", "django_tasks_database"],
    ).select_related("content_type")
    assert supervisors == agents | {f"{p.content_type.app_label}.{p.codename}" for p in views} | {
        "tracker.work_queue",
        "tracker.recheck_orders",
        "tracker.export_orders",
    }
    assert "tracker.view_historicalcardorder" in supervisors
    assert administrators - supervisors == {
        "tracker.change_cardorder",
        "tracker.import_orders",
        "tracker.change_inboxitem",
        "tracker.change_threshold",
        "tracker.change_alertrule",
        "auth.add_user",
        "auth.change_user",
    }
    everyone = agents | supervisors | administrators
    assert not [p for p in everyone if ".delete_" in p]
    assert not [p for p in everyone if p.endswith("historicalcardorder") and "view_" not in p]
    assert not [p for p in everyone if p.endswith("lookupaudit") and "view_" not in p]


def test_agents_have_no_admin_site(client, agent):
    client.force_login(agent)
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/login/" in response.url


def test_supervisors_see_orders_read_only_and_cannot_change_or_import(client, supervisor):
    order = shipped_order()
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    assertNotContains(listing, 'name="action"')
    assertNotContains(listing, "import_link")
    page = client.get(change_url(order))
    assert page.status_code == 200
    assertNotContains(page, 'name="_save"')
    assertNotContains(page, "change_reason")
    refused = client.post(change_url(order), form_data(order, stage="CARD_SHIPPED"))
    assert refused.status_code == 403
    assert client.get(reverse("admin:tracker_cardorder_import")).status_code == 403
    order.refresh_from_db()
    assert order.stage == "CARD_PROD_DONE"


def test_administrators_are_offered_change_import_and_actions(client, administrator):
    order = shipped_order()
    listing = client.get(CHANGELIST)
    assertContains(listing, 'value="resync"')
    assertContains(listing, 'value="mark_resolved"')
    assertContains(listing, "import_link")
    assertContains(client.get(change_url(order)), 'name="change_reason"')
    assert client.get(reverse("admin:tracker_cardorder_import")).status_code == 200


def test_administrators_give_roles_but_not_permissions_or_superuser(client, administrator):
    someone = User.objects.create_user("newcomer")
    page = client.get(reverse("admin:auth_user_change", args=[someone.pk]))
    assert page.status_code == 200
    assertNotContains(page, 'name="is_superuser"')
    assertNotContains(page, 'name="user_permissions"')
    assertContains(page, 'name="groups"')
    group = Group.objects.get(name=roles.ADMINISTRATORS)
    url = reverse("admin:auth_group_change", args=[group.pk])
    assert client.get(url).status_code == 200
    assertNotContains(client.get(url), 'name="_save"')


# --- List pages -----------------------------------------------------------------------------


def test_the_order_search_takes_every_key_whole_or_by_its_start(client, administrator):
    make_order(card_id="crd-aaa-1", customer_reference="CUST-77")
    make_order(card_id="crd-aaa-2", tracking_number="1Z999")
    make_order(card_id="crd-bbb-1", input_file_name="batch-7.csv")

    def found(q: str) -> list[str]:
        page = client.get(CHANGELIST, {"q": q})
        return sorted(o.card_id for o in page.context["cl"].result_list)

    assert found("crd-aaa") == ["crd-aaa-1", "crd-aaa-2"]
    assert found("CUST-77") == ["crd-aaa-1"]
    assert found("1Z9") == ["crd-aaa-2"]
    assert found("batch-7.csv") == ["crd-bbb-1"]
    assert found("aaa") == []  # no "contains" search: no index could serve it


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"stage": "CARD_SHIPPED"}, ["crd-f-shipped"]),
        ({"stage": "none"}, ["crd-f-new"]),
        ({"terminal__exact": "1"}, ["crd-f-shipped"]),
        ({"conflict__exact": "1"}, ["crd-f-conflict"]),
        ({"unrecognized": "yes"}, ["crd-f-held"]),
        ({"unknown_to_d1__exact": "1"}, ["crd-f-new"]),
        ({"muted": "yes"}, ["crd-f-held"]),
        ({"site": "PC-FR-GEM-01"}, ["crd-f-conflict"]),
        ({"issuer": ISSUER, "stage": "CARD_PROD_DONE"}, ["crd-f-conflict"]),
    ],
)
def test_order_filters(client, administrator, settings, query, expected):
    settings.TRACKER_PRODUCTION_SITES = ["PC-FR-GEM-01", "PC-DE-MUC-02"]
    make_order(card_id="crd-f-shipped", stage="CARD_SHIPPED", terminal=True)
    make_order(card_id="crd-f-new", unknown_to_d1=True)
    make_order(
        card_id="crd-f-conflict",
        stage="CARD_PROD_DONE",
        conflict=True,
        production_site="PC-FR-GEM-01",
    )
    make_order(
        card_id="crd-f-held",
        stage="CARD_PROD_READY",
        unrecognized_status="CARD_PROD_ON_HOLD",
        muted_until=queue.FOREVER,
    )
    page = client.get(CHANGELIST, query)
    assert sorted(o.card_id for o in page.context["cl"].result_list) == expected


def populate(rows: int) -> None:
    user = User.objects.create_user(f"u{rows}")
    orders = CardOrder.objects.bulk_create(
        CardOrder(issuer_id=ISSUER, card_id=f"crd-q{rows}-{n}") for n in range(rows)
    )
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            order=o, content_hash=f"h{n}", source="notification", verdict="applied", user=user
        )
        for n, o in enumerate(orders)
    )
    Acknowledgement.objects.bulk_create(
        Acknowledgement(order=o, user=user, kind="acknowledge") for o in orders
    )
    LookupAudit.objects.bulk_create(
        LookupAudit(
            username="u", issuer_id=ISSUER, card_id=o.card_id, action="view", outcome="found"
        )
        for o in orders
    )
    for order in orders[:3]:
        corrections.correct(order.pk, {"carrier": f"c{rows}"}, user, "test")


# Session, user, the permissions (one read of the shared cache), then per page the capped count
# and the rows; the inbox and thresholds pages read nothing more, the other lists join what they
# show.
LIST_PAGES = {
    "tracker_cardorder": 5,
    "tracker_cardorder?q=crd-q": 6,  # + whether any key matches whole
    "tracker_cardorder?stage=none&terminal__exact=0&muted=no&issuer=" + ISSUER: 5,
    "tracker_timelineevent": 5,
    "tracker_timelineevent?q=crd-q3-1": 5,
    "tracker_inboxitem": 5,
    "tracker_threshold": 6,  # a few rows: counted twice, as Django does
    "tracker_acknowledgement": 5,
    "tracker_lookupaudit": 5,
    "tracker_lookupaudit?q=crd-q3-1": 5,
    "auth_user": 7,  # + the groups for its filter
    "auth_group": 6,
}


@pytest.mark.parametrize("list_page", LIST_PAGES)
def test_each_list_page_costs_a_fixed_number_of_queries(
    client, administrator, django_assert_num_queries, list_page
):
    name, _, query = list_page.partition("?")
    url = reverse(f"admin:{name}_changelist") + (f"?{query}" if query else "")
    populate(3)
    with django_assert_num_queries(LIST_PAGES[list_page]):
        assert client.get(url).status_code == 200
    populate(40)
    with django_assert_num_queries(LIST_PAGES[list_page]):
        assert client.get(url).status_code == 200


def test_a_long_list_is_counted_up_to_a_bound(client, administrator, monkeypatch):
    monkeypatch.setattr(common, "COUNT_CAP", 5)
    monkeypatch.setattr(common.CappedPaginator, "cap", 5)
    CardOrder.objects.bulk_create(
        CardOrder(issuer_id=ISSUER, card_id=f"crd-many-{n}") for n in range(8)
    )
    page = client.get(CHANGELIST)
    assertContains(page, "More than 5 card orders")
    assert page.context["cl"].result_count == 6
    assertNotContains(page, "Show counts")  # facets would count the whole table per choice


def test_a_list_keeps_its_own_order_whatever_the_url_asks(client, administrator):
    page = client.get(CHANGELIST, {"o": "8"})  # last event: no index would serve the sort
    assert page.context["cl"].queryset.query.order_by == ("-pk",)

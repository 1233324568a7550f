"""Registering orders from a CSV file in the admin site: checked first, all or nothing."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, connection
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from tests.conftest import ISSUER, op, staff
from tracker import corrections, csv_import, ingest, queries, queue, roles
from tracker.attention import Reason
from tracker.models import CardOrder, Source, TimelineEvent

pytestmark = pytest.mark.django_db
# Skipped before the database is set up: a transactional test flushes it even when it skips.
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (row locks outside a test transaction)",
)

IMPORT = reverse("admin:tracker_cardorder_import")
PROCESS = reverse("admin:tracker_cardorder_process_import")
HEADER = "issuerId,cardId,issuerRequestId,groupId,orderId,customerReference\n"
GOOD = HEADER + (
    f"{ISSUER},crd-reg-1,req-1,,,CUST-1\n"
    f"{ISSUER},crd-reg-2,,grp-9,ord-3,CUST-2\n"
    f"{ISSUER},crd-known,,,,CUST-3\n"
)


@pytest.fixture
def administrator(client) -> User:
    user = staff(roles.ADMINISTRATORS, "ada")
    client.force_login(user)
    return user


@pytest.fixture
def known() -> CardOrder:
    """An order D1 told Tracker about, in production."""
    ingest.apply(ISSUER, op("CARD_PROD_ONGOING", cardId="crd-known"), Source.NOTIFICATION)
    return CardOrder.objects.get(card_id="crd-known")


def preview(client, text: str, name: str = "orders.csv"):
    upload = SimpleUploadedFile(name, text.encode(), content_type="text/csv")
    return client.post(IMPORT, {"import_file": upload, "format": "0", "resource": "0"})


def confirm(client, page):
    form = page.context["confirm_form"]
    return client.post(PROCESS, {**form.initial, "format": "0"}, follow=True)


def snapshot() -> list[tuple]:
    return list(
        CardOrder.objects.order_by("card_id").values_list(
            "card_id", "stage", "customer_reference", "bulk_group_id", "issuer_request_id"
        )
    )


def test_a_valid_file_is_previewed_without_writing_then_imported_on_confirmation(
    client, administrator, known
):
    before = snapshot()
    page = preview(client, GOOD)
    assert page.status_code == 200
    assert page.context["confirm_form"] is not None
    assertContains(page, "Confirm import")
    assert snapshot() == before  # the preview wrote nothing
    stored = page.context["confirm_form"].initial["import_file_name"]
    assert cache.get(f"django-import-export-{stored}") is not None  # until confirmed

    done = confirm(client, page)
    assertContains(done, "Import finished: 2 new, 1 updated")
    new = CardOrder.objects.get(card_id="crd-reg-2")
    assert (new.bulk_group_id, new.bulk_order_id, new.customer_reference) == (
        "grp-9",
        "ord-3",
        "CUST-2",
    )
    assert timezone.now() - new.first_seen_at < timedelta(minutes=1)
    assert new.stage == "" and new.last_event_at is None
    known_after = CardOrder.objects.get(card_id="crd-known")
    # The issuer's reference only; D1's state is left as the ingest wrote it.
    assert known_after.customer_reference == "CUST-3"
    assert (known_after.stage, known_after.last_event_at) == (known.stage, known.last_event_at)

    records = corrections.Correction.objects.order_by("card_id")
    assert [(r.card_id, r.history_type, r.history_user) for r in records] == [
        ("crd-known", "~", administrator),
        ("crd-reg-1", "+", administrator),
        ("crd-reg-2", "+", administrator),
    ]
    assert records[0].changes == {"customer_reference": ["", "CUST-3"]}
    assert records[0].history_change_reason == "CSV import: orders.csv"
    event = TimelineEvent.objects.get(order=known_after, source=Source.ADMIN)
    assert event.note == "CSV import: orders.csv\ncustomer reference: — → CUST-3"


def test_agents_then_find_the_card_by_the_customer_reference(client, administrator):
    confirm(client, preview(client, GOOD))
    [hit] = queries.find_cards("CUST-2").hits
    assert (hit.order.card_id, hit.matched_field) == ("crd-reg-2", "customer_reference")


def test_a_registered_order_d1_never_mentions_is_never_heard_of_in_the_queue(client, administrator):
    confirm(client, preview(client, GOOD))
    later = timezone.now() + timedelta(hours=25)
    rows = queue.orders(queue.Filters(), now=later).rows
    assert {(row.order.card_id, tuple(row.reasons)) for row in rows} == {
        ("crd-reg-1", (Reason.NEVER_HEARD,)),
        ("crd-reg-2", (Reason.NEVER_HEARD,)),
        ("crd-known", (Reason.NEVER_HEARD,)),
    }


def test_an_invalid_file_shows_each_rows_errors_and_writes_nothing(client, administrator, known):
    ingest.apply(
        ISSUER,
        op("CARD_PROD_ONGOING", cardId="crd-req", issuerRequestId="req-from-d1"),
        Source.NOTIFICATION,
    )
    before = snapshot()
    bad = HEADER + (
        f"{ISSUER},crd-ok,,,,CUST-OK\n"  # fine, but nothing is written while others fail
        f"OTHERISSUR,crd-x,,,,\n"
        f"{ISSUER},bad card!,,,,\n"
        f"{ISSUER},crd-ok,,,,CUST-AGAIN\n"
        f"{ISSUER},crd-pan,,,,4111111111111111\n"
        f"{ISSUER},crd-req,req-other,,,\n"
        f"{ISSUER},crd-nul,,,,CUST\x00-1\n"
    )
    page = preview(client, bad)
    assert page.context.get("confirm_form") is None
    assertNotContains(page, "Confirm import")
    errors = {row.number: row.error_dict for row in page.context["result"].invalid_rows}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7]
    assert errors[2] == {"issuerId": ["This deployment does not serve this issuer."]}
    assertContains(page, "This deployment does not serve this issuer.")
    assertContains(page, "Not a D1 cardId")
    assertContains(page, "This card is already on row 1.")
    assertContains(page, "looks like a card number")
    assertContains(page, "D1 already reported req-from-d1 for this card.")
    assert errors[7] == {
        "customerReference": ["Contains a NUL character, which no value can hold."]
    }
    assert snapshot() == before
    assert not corrections.Correction.objects.exists()
    # The refused file is not kept for a confirmation that will never come.
    stored = page.context["form"].cleaned_data["import_file"].tmp_storage_name
    assert cache.get(f"django-import-export-{stored}") is None


def test_an_unknown_or_missing_column_stops_the_file(client, administrator):
    page = preview(client, f"issuerId,cardId,customerRef\n{ISSUER},crd-1,X\n")
    assert page.context.get("confirm_form") is None
    assertContains(page, "Unknown: customerRef.")
    page = preview(client, f"issuerId,customerReference\n{ISSUER},X\n")
    assertContains(page, "Missing: cardId.")
    assert not CardOrder.objects.exists()


def test_a_file_longer_than_the_limit_is_refused(client, administrator, monkeypatch):
    monkeypatch.setattr(csv_import, "MAX_ROWS", 2)
    page = preview(client, GOOD)
    assertContains(page, "The file has 3 rows; import at most 2 at a time.")
    assert page.context.get("confirm_form") is None


def test_importing_the_same_file_again_changes_nothing(client, administrator, known):
    confirm(client, preview(client, GOOD))
    before = snapshot()
    records = corrections.Correction.objects.count()
    events = TimelineEvent.objects.count()

    page = preview(client, GOOD)
    assert {row.import_type for row in page.context["result"].rows} == {"skip"}
    done = confirm(client, page)
    assertContains(done, "Import finished: 0 new, 0 updated, 0 deleted and 3 skipped")
    assert snapshot() == before
    assert corrections.Correction.objects.count() == records
    assert TimelineEvent.objects.count() == events


def test_a_blank_cell_leaves_a_known_value_as_it_is(client, administrator):
    confirm(client, preview(client, GOOD))
    page = preview(client, HEADER + f"{ISSUER},crd-reg-2,,,ord-4,\n")
    confirm(client, page)
    order = CardOrder.objects.get(card_id="crd-reg-2")
    assert (order.bulk_group_id, order.bulk_order_id, order.customer_reference) == (
        "grp-9",
        "ord-4",
        "CUST-2",
    )


def test_a_notification_before_the_confirmation_is_kept(client, administrator):
    page = preview(client, GOOD)
    ingest.apply(ISSUER, op("DATA_PREPARED", cardId="crd-reg-1"), Source.NOTIFICATION)
    done = confirm(client, page)
    # crd-reg-1 now exists: the confirmed import finds it and fills in the references only.
    assertContains(done, "Import finished: 2 new, 1 updated")
    order = CardOrder.objects.get(card_id="crd-reg-1")
    assert (order.stage, order.customer_reference) == ("DATA_PREPARED", "CUST-1")


def test_a_database_that_refuses_the_confirmed_file_is_said_so_and_nothing_is_written(
    client, administrator
):
    page = preview(client, GOOD)

    def refuse(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "tracker_cardorder"'):
            raise DatabaseError("value too long for type character varying(64)")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        done = confirm(client, page)
    assertContains(done, "Nothing was imported: the database refused the file")
    assertContains(done, "value too long")
    assert not CardOrder.objects.exists()


def test_supervisors_and_agents_cannot_import(client, agent):
    client.force_login(staff(roles.SUPERVISORS, "sue"))
    assert client.get(IMPORT).status_code == 403
    assert preview(client, GOOD).status_code == 403
    client.force_login(agent)
    assert client.get(IMPORT).status_code == 302  # no admin site at all
    assert not CardOrder.objects.exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_import_outside_a_test_transaction(client):
    # As in production: the import takes its row locks in its own transaction.
    from django.apps import apps

    roles.sync_groups(apps)  # a transactional test's flush empties the groups
    client.force_login(staff(roles.ADMINISTRATORS, "ada"))
    ingest.apply(ISSUER, op("CARD_PROD_ONGOING", cardId="crd-known"), Source.NOTIFICATION)
    done = confirm(client, preview(client, GOOD))
    assertContains(done, "Import finished: 2 new, 1 updated")
    assert CardOrder.objects.get(card_id="crd-known").customer_reference == "CUST-3"

"""No card number anywhere: one masking function (tracker/pan.py), applied at every door.

The end-to-end test sends card numbers through every door at once, then reads every text column
of every table (and the captured logs) looking for them.
"""

import base64
import json
import logging
import pickle
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ISSUER, NOTIFY_URL, drain, make_operation, make_order, run_command, staff
from tests.sandbox_fixtures import card
from tracker import pan, roles
from tracker.d1.schema import BadPayload, parse_operation
from tracker.models import CardOrder, InboxItem, LookupAudit

HEADER = "issuerId,cardId,issuerRequestId,groupId,orderId,customerReference\n"
# Luhn-valid test numbers of several lengths and brands, as people write them.
VISA = "4111 1111 1111 1111"
MASTERCARD = "5555-5555-5555-4444"
AMEX = "378282246310005"
VISA_13 = "4222222222222"
MAESTRO_19 = "6759649826438453000"
LONG_19 = "4000 0000 0000 0000 006"
ALL = (VISA, MASTERCARD, AMEX, VISA_13, LONG_19)


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


# --- The function ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, masked",
    [
        (VISA, "411111******1111"),
        (MASTERCARD, "555555******4444"),
        (AMEX, "378282*****0005"),
        (VISA_13, "422222***2222"),
        (LONG_19, "400000*********0006"),
        (f"card {VISA}, thanks", "card 411111******1111, thanks"),
        (f"{AMEX}/{VISA_13}", "378282*****0005/422222***2222"),
    ],
)
def test_a_card_number_keeps_its_first_six_and_last_four_digits(text, masked):
    assert pan.mask_pans(text) == masked
    assert pan.contains_pan(text) and not pan.contains_pan(masked)
    assert pan.is_or_was_pan(masked)


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails the Luhn check
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits
        "2026-12-04T08:41:12.305Z",
        "tracking 1Z999AA10123456784",
        "4111  1111 1111 1111",  # a double space is not how card numbers are written
        "crd-0001",
    ],
)
def test_what_is_not_a_card_number_is_left_alone(text):
    assert pan.mask_pans(text) == text
    assert not pan.contains_pan(text)


def test_two_numbers_written_one_after_the_other_are_both_masked():
    assert pan.mask_pans(f"{_digits(VISA)} {_digits(MASTERCARD)}") == (
        "411111******1111 555555******4444"
    )
    assert pan.mask_pans(f"{VISA} {MASTERCARD.replace('-', ' ')}") == (
        "411111******1111 555555******4444"
    )


@given(st.uuids())
def test_a_uuid_is_never_taken_for_a_card_number(value):
    # D1's operationIds are UUIDs: digits between a UUID's dashes are not a grouped card number.
    assert not pan.contains_pan(str(value))


def test_grouped_digits_inside_an_identifier_are_left_alone():
    assert pan.mask_pans("c407de1b-1154-4399-6726-7750b315d4e7") == (
        "c407de1b-1154-4399-6726-7750b315d4e7"
    )
    assert pan.mask_pans("PAN4111111111111111") == "PAN411111******1111"


def test_masking_reaches_into_json_keys_values_and_numbers():
    document = {"a": [int(_digits(VISA)), f"x {AMEX}"], _digits(VISA): {"n": 7, "b": True}}
    assert pan.mask_in_json(document) == {
        "a": ["411111******1111", "x 378282*****0005"],
        "411111******1111": {"n": 7, "b": True},
    }


def test_masking_bytes_keeps_every_other_byte():
    body = f'{{"m": "{VISA}", "é": "ü"}}'.encode()
    assert pan.mask_bytes(body) == '{"m": "411111******1111", "é": "ü"}'.encode()


@given(st.text())
def test_masking_is_idempotent_and_leaves_no_card_number(text):
    masked = pan.mask_pans(text)
    assert pan.mask_pans(masked) == masked
    assert not pan.contains_pan(masked)


def test_a_log_record_is_masked_whatever_handler_takes_it(caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("tracker.test").info("card %s seen", VISA)
    try:
        raise ValueError(f"bad {AMEX}")
    except ValueError:
        logging.getLogger("tracker.test").exception("failed")
    assert _digits(VISA) not in caplog.text.replace(" ", "")
    assert AMEX not in caplog.text
    assert "411111******1111" in caplog.text


# --- The operation parser ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["cardId", "operationId"])
@pytest.mark.parametrize("number", [_digits(VISA), "411111******1111"])
def test_an_operation_whose_identifier_is_a_card_number_is_quarantined(key, number):
    with pytest.raises(BadPayload) as raised:
        parse_operation(make_operation(**{key: number}))
    assert raised.value.field == key
    assert _digits(VISA) not in str(raised.value)


def test_the_parser_masks_every_field_and_its_error_messages():
    operation = parse_operation(make_operation(details__reason=f"customer gave {VISA}", error=AMEX))
    assert operation.details.reason == "customer gave 411111******1111"
    assert operation.error == "378282*****0005"
    assert AMEX not in json.dumps(operation.raw)
    with pytest.raises(BadPayload) as raised:
        parse_operation(make_operation(details__dueDate=_digits(VISA)))
    assert _digits(VISA) not in str(raised.value)


# --- Every door, then every table ----------------------------------------------------------------


def _text_columns() -> list[tuple[str, str, str]]:
    """(table, column, kind) of every text, JSON or binary column of every table."""
    kinds = {"CharField", "TextField", "JSONField", "BinaryField", "SlugField", "EmailField"}
    columns = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            for column in connection.introspection.get_table_description(cursor, table):
                kind = connection.introspection.get_field_type(column.type_code, column)
                if kind in kinds:
                    columns.append((table, column.name, kind))
    return columns


def _readable(table: str, value) -> str:
    if isinstance(value, memoryview | bytes):
        value = bytes(value).decode("latin-1")
    value = str(value)
    if table == "django_session":
        return value  # decoded separately below
    if table == "tracker_cache":
        try:
            return value + repr(pickle.loads(base64.b64decode(value)))
        except Exception:  # noqa: BLE001 - not a pickled value: the text itself is scanned
            return value
    return value


def _found_anywhere(numbers: tuple[str, ...]) -> list[str]:
    wanted = [_digits(number) for number in numbers]
    found = []
    columns = _text_columns()
    assert {("tracker_inboxitem", "body"), ("django_admin_log", "object_repr")} <= {
        (table, column) for table, column, _kind in columns
    }
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table, column, _kind in columns:
            cursor.execute(f"SELECT {quote(column)} FROM {quote(table)}")
            for (value,) in cursor.fetchall():
                if value is None:
                    continue
                text = re.sub(r"[ -]", "", _readable(table, value))
                found += [f"{table}.{column}" for digits in wanted if digits in text]
    for session in SessionStore.get_model_class().objects.all():
        text = re.sub(r"[ -]", "", repr(SessionStore().decode(session.session_data)))
        found += ["django_session (decoded)" for digits in wanted if digits in text]
    return found


@pytest.fixture
def supervisor_client(client):
    client.force_login(staff(roles.SUPERVISORS, "super-sue"))
    return client


def _notify(client, bearer, body: bytes, **headers: str):
    return client.post(
        NOTIFY_URL, body, content_type="application/json", headers={**bearer, **headers}
    )


@pytest.mark.django_db
def test_a_card_number_sent_through_every_door_is_found_nowhere(
    client, bearer, d1, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG)
    numbers = ALL

    # Notifications: free texts, an identifier, a number, a header and an unreadable field.
    body = json.dumps(
        {
            "operations": [
                make_operation(
                    cardId="crd-pan-1",
                    error=f"card {VISA}",
                    issuerRequestId=AMEX,
                    details__reason=MASTERCARD,
                    details__shipment={"trackingNumber": VISA_13, "message": LONG_19},
                    extra=int(_digits(VISA)),
                ),
                make_operation(cardId=_digits(MASTERCARD)),
                make_operation(cardId="crd-pan-2", operationId=_digits(AMEX)),
                make_operation(cardId="crd-pan-3", startTime=VISA),
            ]
        }
    ).encode()
    assert _notify(client, bearer, body, **{"X-Correlation-Id": VISA}).status_code == 204
    drain()
    item = InboxItem.objects.get()
    assert item.quarantined == 3
    assert {entry.get("field") for entry in item.results} >= {"operations[1].cardId"}

    # A saved body through the command.
    saved = tmp_path / "body.json"
    saved.write_bytes(body)
    assert run_command("ingest_notification", str(saved), "--issuer", ISSUER)[0] == 0

    # D1's own answer to a live refresh.
    d1.seed(
        card(
            "crd-pan-live",
            operations=[
                make_operation(cardId="crd-pan-live", details__reason=f"{AMEX}", error=MASTERCARD)
            ],
        )
    )
    agent = staff(roles.AGENTS, "agent-pan")
    client.force_login(agent)
    assert client.post(f"/cards/{ISSUER}/crd-pan-live/live/").status_code == 302

    # The search box: not searched, not offered to D1, not shown back.
    before = len(d1.requests())
    page = client.get("/", {"q": VISA})
    assert page.status_code == 200
    assert _digits(VISA) not in re.sub(r"[ -]", "", page.content.decode())
    assert "411111******1111" in page.content.decode()
    assert b"Look up in D1" not in page.content
    assert b"looks like a card number" in page.content
    page = client.get("/", {"q": _digits(AMEX)}, headers={"HX-Request": "true"})
    assert AMEX not in page.content.decode()
    # Card addresses and the lookup form.
    assert client.get(f"/cards/{ISSUER}/{_digits(VISA)}/").status_code == 404
    assert client.post(f"/cards/{ISSUER}/{_digits(VISA)}/live/").status_code == 404
    lookup = client.post(reverse("tracker:d1_lookup"), {"card_id": AMEX, "issuer_id": ISSUER})
    assert lookup.status_code == 400
    assert len(d1.requests()) == before
    assert not LookupAudit.objects.exclude(card_id__in=["crd-pan-live"]).exists()

    # The supervisors' note.
    supervisor = staff(roles.SUPERVISORS, "super-sue")
    client.force_login(supervisor)
    order = make_order(card_id="crd-pan-ack", attention_since=timezone.now() - timedelta(hours=2))
    url = reverse("tracker:queue_acknowledge", args=[order.pk])
    assert (
        client.post(url, {"action": "acknowledge", "note": f"customer {VISA}"}).status_code == 302
    )
    until = (timezone.localdate() + timedelta(days=2)).isoformat()
    snooze = {"action": "snooze", "until": until, "note": f"again {AMEX}"}
    assert client.post(url, snooze).status_code == 302
    export = client.get(reverse("tracker:queue_export"), {"show": "all", "site": VISA})
    assert _digits(VISA) not in b"".join(export.streaming_content).decode()

    # The admin site: a correction, a user, a group (its log too), a CSV import.
    root = User.objects.create_superuser("root-pan")
    client.force_login(root)
    correctable = make_order(card_id="crd-pan-admin")
    change = reverse("admin:tracker_cardorder_change", args=[correctable.pk])
    form = client.get(change).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(tracking_number=VISA, carrier=f"post {AMEX}", change_reason="found on a scan")
    data = {k: v for k, v in data.items() if not isinstance(v, bool) or v}
    assert client.post(change, data).status_code == 302
    correctable.refresh_from_db()
    assert correctable.tracking_number == "411111******1111"
    user_change = reverse("admin:auth_user_change", args=[agent.pk])
    user_form = client.get(user_change).context["adminform"].form
    user_data = {
        "username": agent.username,
        "first_name": f"Al {VISA}",
        "last_name": MASTERCARD,
        "email": "",
        "is_active": "on",
        "groups": [str(group.pk) for group in agent.groups.all()],
        "date_joined_0": user_form.initial["date_joined"].strftime("%Y-%m-%d"),
        "date_joined_1": user_form.initial["date_joined"].strftime("%H:%M:%S"),
    }
    assert client.post(user_change, user_data).status_code == 302
    agent.refresh_from_db()
    assert agent.first_name == "Al 411111******1111"
    group_add = reverse("admin:auth_group_add")
    assert client.post(group_add, {"name": f"team {AMEX}"}).status_code == 302
    assert Group.objects.filter(name="team 378282*****0005").exists()
    from tests.test_import import confirm, preview

    refused = preview(client, f"{HEADER}{ISSUER},crd-pan-csv2,,,,{MASTERCARD}\n")
    assert refused.context.get("confirm_form") is None
    assert b"looks like a card number" in refused.content
    page = preview(client, f"{HEADER}{ISSUER},crd-pan-csv,{VISA_13},{AMEX},{LONG_19},\n")
    assert _digits(AMEX) not in page.content.decode()
    assert confirm(client, page).status_code == 200
    imported = CardOrder.objects.get(card_id="crd-pan-csv")
    assert imported.bulk_group_id == "378282*****0005"

    found = _found_anywhere(numbers)
    assert not found, f"card numbers stored in: {sorted(set(found))}"
    logged = re.sub(r"[ -]", "", caplog.text)
    assert not [number for number in numbers if _digits(number) in logged]
    assert CardOrder.objects.filter(card_id="crd-pan-1", error="card 411111******1111").exists()


@pytest.mark.django_db
def test_the_scan_finds_a_card_number_stored_behind_the_masking_back(client):
    # The scan above proves something only if it sees what the doors would have let through.
    InboxItem.objects.create(issuer_id=ISSUER, body=f'{{"x": "{VISA}"}}'.encode())
    make_order(card_id="crd-scan", shipment={"note": MASTERCARD})
    session = SessionStore()
    session["q"] = AMEX
    session.create()
    found = set(_found_anywhere(ALL))
    assert found == {
        "tracker_inboxitem.body",
        "tracker_cardorder.shipment",
        "django_session (decoded)",
    }

import json
import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import EXAMPLES, example, make_operation
from tracker.d1.schema import (
    BadPayload,
    parse_body,
    parse_operation,
    parse_operations,
    parse_status_response,
)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_shared_example_with_operations_parses(path):
    document = json.loads(path.read_text())
    if "operations" not in document:
        pytest.skip("an error body, not an operation")
    for item in parse_body(path.read_bytes()):
        operation = parse_operation(item)
        assert operation.card_id == item["cardId"]
        assert operation.business_status == item["details"]["status"]


def test_shipment_fields_are_read():
    operation = parse_operation(example("07")["operations"][0])
    assert operation.status == "SUCCESSFUL"
    assert operation.end_time == datetime(2025, 3, 5, 15, 52, 9, 447000, tzinfo=UTC)
    shipment = operation.details.shipment
    assert (shipment.carrier, shipment.tracking_number, shipment.status) == (
        "la-poste-colissimo",
        "6A21458873310",
        "InfoReceived",
    )
    assert shipment.tracking_url.startswith("https://www.laposte.fr/")


def test_failure_fields_are_read():
    operation = parse_operation(example("03")["operations"][0])
    assert (operation.error_code, operation.error) == ("FIELD_INVALID_VALUE", "embossing.line2")
    assert operation.details.reason.startswith("Embossing line 2")


def test_unknown_keys_are_kept_in_raw():
    item = make_operation(futureField={"x": 1}, details__onHoldUntil="2025-04-01")
    operation = parse_operation(item)
    assert operation.raw["futureField"] == {"x": 1}
    assert operation.raw["details"]["onHoldUntil"] == "2025-04-01"


def test_missing_details_means_no_business_status():
    item = make_operation()
    del item["details"]
    assert parse_operation(item).business_status is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-01-17T06:28:02.492Z", datetime(2025, 1, 17, 6, 28, 2, 492000, tzinfo=UTC)),
        ("2025-01-17T07:28:02.492+01:00", datetime(2025, 1, 17, 6, 28, 2, 492000, tzinfo=UTC)),
        ("2025-01-17T01:58:02-04:30", datetime(2025, 1, 17, 6, 28, 2, tzinfo=UTC)),
        ("2025-01-17T06:28:02.123456789Z", datetime(2025, 1, 17, 6, 28, 2, 123456, tzinfo=UTC)),
        ("2025-01-17T06:28:02.5+0000", datetime(2025, 1, 17, 6, 28, 2, 500000, tzinfo=UTC)),
        ("2025-01-17T06:28:02", datetime(2025, 1, 17, 6, 28, 2, tzinfo=UTC)),
    ],
)
def test_timestamps_take_any_offset_and_precision_as_utc_instants(text, expected):
    operation = parse_operation(make_operation(startTime=text))
    assert operation.start_time == expected
    assert operation.start_time.tzinfo == UTC


def test_due_date_is_a_date_or_a_datetime():
    as_date = parse_operation(make_operation(details__dueDate="2025-03-05")).details
    assert (as_date.due_date, as_date.due_at) == (date(2025, 3, 5), None)
    as_datetime = parse_operation(make_operation(details__dueDate="2025-03-05T17:00:00+01:00"))
    assert as_datetime.details.due_at == datetime(2025, 3, 5, 16, 0, tzinfo=UTC)
    assert as_datetime.details.due_date == date(2025, 3, 5)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"operationId": None}, "operationId"),
        ({"operationId": "has space"}, "operationId"),
        ({"operationId": "x" * 65}, "operationId"),
        ({"cardId": ""}, "cardId"),
        ({"cardId": "c" * 49}, "cardId"),
        ({"cardId": 731}, "cardId"),
        ({"operation": None}, "operation"),
        ({"status": None}, "status"),
        ({"status": ["PENDING"]}, "status"),
        ({"startTime": None}, "startTime"),
        ({"startTime": "yesterday"}, "startTime"),
        ({"endTime": "2025-13-01T00:00:00Z"}, "endTime"),
        ({"errorCode": 42}, "errorCode"),
        ({"issuerRequestId": "r" * 256}, "issuerRequestId"),
        ({"details": "CARD_SHIPPED"}, "details"),
        ({"details__status": 60}, "details.status"),
        ({"details__dueDate": "2025-02-30"}, "details.dueDate"),
        ({"details__dueDate": "soon"}, "details.dueDate"),
        ({"details__productionSite": "p" * 65}, "details.productionSite"),
        ({"details__shipment": ["dhl"]}, "details.shipment"),
        ({"details__shipment": {"trackingNumber": 12345}}, "details.shipment.trackingNumber"),
        ({"details__shipment": {"carrier": "c" * 65}}, "details.shipment.carrier"),
        # PostgreSQL can store no NUL, and the operation is kept whole: anywhere, even unknown.
        ({"details__reason": "on hold\x00"}, "details.reason"),
        ({"details__shipment": {"message": "\x00"}}, "details.shipment.message"),
        ({"futureField": ["ok", "n\x00"]}, "futureField[1]"),
        # NaN and Infinity: Python's parser takes them, JSON and PostgreSQL do not.
        ({"futureField": float("nan")}, "futureField"),
        ({"details__extra": {"score": float("-inf")}}, "details.extra.score"),
    ],
)
def test_each_malformed_field_is_named(overrides, field):
    with pytest.raises(BadPayload) as caught:
        parse_operation(make_operation(**overrides), "operations[3]")
    assert caught.value.field == f"operations[3].{field}"
    assert field in str(caught.value)


def test_a_key_with_a_nul_character_is_refused_where_it_stands():
    with pytest.raises(BadPayload, match=r"operations\[1\]\.details\.extra: has a key with a NUL"):
        parse_operation(make_operation(details__extra={"a\x00": 1}), "operations[1]")


def test_nesting_deeper_than_d1_ever_sends_is_refused():
    deep: list = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(BadPayload, match=r"operations\[0\]\.futureField(\[0\])+: is nested more"):
        parse_operation(make_operation(futureField=deep), "operations[0]")


def test_a_body_too_deep_to_read_can_never_succeed():
    with pytest.raises(BadPayload, match="nested too deeply"):
        parse_body("[" * 100_000 + "]" * 100_000)


def test_an_operation_that_is_not_an_object_is_named():
    with pytest.raises(BadPayload, match=r"operations\[0\]: must be a JSON object"):
        parse_operation("CARD_SHIPPED", "operations[0]")


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"ops": []}', "operations: must be a list"),
        (b'{"operations": {"cardId": "x"}}', "operations: must be a list"),
    ],
)
def test_a_body_that_can_never_succeed_is_rejected_whole(body, problem):
    with pytest.raises(BadPayload, match=problem):
        parse_body(body)


@pytest.mark.parametrize(
    "number", [10**30, -(2**63) - 1, 2**64, 2**64 - 1, 1.5e300, -0.25, 0.1, 1e-320]
)
def test_a_body_is_read_exactly_as_the_standard_library_reads_it(number):
    # The fast reader must not turn an integer beyond 64 bits into a float, nor round anything.
    body = json.dumps({"operations": [{"number": number, "text": "カード\u00e9"}]})
    for document in (body, body.encode()):
        [item] = parse_body(document)
        assert item == json.loads(body)["operations"][0]
        assert type(item["number"]) is type(number)


def test_nan_and_infinity_are_read_so_that_the_item_is_quarantined():
    items = parse_body(b'{"operations": [{"a": NaN}, {"b": 1e400}, {"c": -Infinity}]}')
    assert [dict(parse_operations(items))[i].problem for i in range(3)] == [
        "is NaN, which is not a JSON number",
        "is Infinity, which is not a JSON number",
        "is -Infinity, which is not a JSON number",
    ]


def test_one_bad_item_in_a_bulk_body_does_not_spoil_the_others():
    items = example("10")["operations"]
    items[2]["startTime"] = "not a time"
    parsed = dict(parse_operations(items))
    assert isinstance(parsed[2], BadPayload)
    assert parsed[2].field == "operations[2].startTime"
    assert [parsed[i].card_id for i in (0, 1, 3)] == [
        "crd-br-2025-110201",
        "crd-br-2025-110202",
        "crd-br-2025-110187",
    ]


def test_on_demand_answers_come_wrapped_or_bare():
    wrapped = example("12")
    bare = wrapped["operations"][0]
    assert parse_status_response(wrapped) == parse_status_response(bare)
    with pytest.raises(BadPayload, match="operationId: is required"):
        parse_status_response({"errorCode": "AUTHORIZER_UNAUTHORIZED", "error": "expired"})


def test_content_hash_ignores_key_order_and_whitespace():
    item = example("07")["operations"][0]
    shuffled = json.loads(json.dumps(item), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert list(shuffled) != list(item)
    assert parse_operation(shuffled).canonical_hash == parse_operation(item).canonical_hash


def test_content_hash_changes_with_the_content():
    first = parse_operation(example("07")["operations"][0])
    later = parse_operation(example("08")["operations"][0])
    assert first.canonical_hash != later.canonical_hash
    assert first.state_hash != later.state_hash


def _reorder(value):
    if isinstance(value, dict):
        items = list(value.items())
        random.Random(len(items)).shuffle(items)
        return {key: _reorder(item) for key, item in items}
    return value


@given(
    offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60),
    digits=st.integers(min_value=0, max_value=9),
)
def test_content_hash_compares_timestamps_as_instants(offset_minutes, digits):
    instant = datetime(2025, 3, 4, 8, 41, 12, 305000, tzinfo=UTC)
    zone = timezone(timedelta(minutes=offset_minutes))
    local = instant.astimezone(zone)
    fraction = f"{local.microsecond:06d}{'0' * 3}"[:digits]
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "")
    text += local.strftime("%z") if offset_minutes else "Z"
    if digits < 3:  # fewer digits than the original drop its milliseconds
        instant = instant.replace(microsecond=int((fraction or "0").ljust(6, "0")))
    reference = parse_operation(make_operation(startTime=instant.isoformat()))
    variant = parse_operation(_reorder(make_operation(startTime=text)))
    assert variant.start_time == reference.start_time
    assert variant.canonical_hash == reference.canonical_hash

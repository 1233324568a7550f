import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tracker.d1.schema import Operation, parse_body, parse_operation

pytest_plugins = ["tests.sandbox_fixtures"]

EXAMPLES = Path(__file__).parent / "examples"
ISSUER = "ISS7K2M40Q"


def example(name: str) -> dict[str, Any]:
    """A shared D1 payload (copied from ../shared/d1/examples) by its number or file name."""
    matches = sorted(EXAMPLES.glob(f"{name}*.json"))
    assert len(matches) == 1, f"no single example named {name}"
    return json.loads(matches[0].read_text())


def example_operations(name: str) -> list[Operation]:
    return [parse_operation(item) for item in example(name)["operations"]]


def make_operation(stage: str | None = "CARD_PROD_REQUESTED", **overrides: Any) -> dict[str, Any]:
    """An operation object like D1 sends, with any top-level key or details.<key> overridden."""
    operation: dict[str, Any] = {
        "operationId": "op-0001",
        "operation": "PRODUCE",
        "status": "PENDING",
        "startTime": "2025-03-04T08:41:12.305Z",
        "cardId": "crd-test-0001",
        "details": {"status": stage},
    }
    for key, value in overrides.items():
        if key.startswith("details__"):
            operation["details"][key.removeprefix("details__")] = value
        else:
            operation[key] = value
    return copy.deepcopy(operation)


def op(stage: str | None = "CARD_PROD_REQUESTED", **overrides: Any) -> Operation:
    return parse_operation(make_operation(stage, **overrides))


def body_operations(body: bytes) -> list[Operation]:
    return [parse_operation(item) for item in parse_body(body)]


@pytest.fixture
def on_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (row locks and concurrent writers)")

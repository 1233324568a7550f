import base64
import copy
import io
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from tracker.d1.schema import Operation, parse_body, parse_operation

pytest_plugins = ["tests.sandbox_fixtures"]

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "d1" / "examples"
ISSUER = "ISS7K2M40Q"


def example(name: str) -> dict[str, Any]:
    """A D1 example payload (docs/d1/examples) by its number or file name."""
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


def delivered(operations: list[Operation], issuer_id: str = ISSUER) -> list[Any]:
    """The operations as ingest.apply_many takes them, received now."""
    from django.utils import timezone

    from tracker import ingest

    now = timezone.now()
    return [ingest.Delivery(issuer_id, operation, now) for operation in operations]


def stored_item(issuer_id: str, body: bytes, headers: dict[str, str] | None = None):
    """A body stored in the inbox as the endpoint stores it, not applied yet."""
    from tracker import inbox
    from tracker.models import InboxItem

    return InboxItem.objects.get(pk=inbox.store(issuer_id, body, headers or {}))


def drain() -> int:
    """Run the applier until the inbox has nothing pending, as `apply_notifications` would."""
    from tracker import applier

    return applier.drain()


def body_operations(body: bytes) -> list[Operation]:
    return [parse_operation(item) for item in parse_body(body)]


def staff(group: str, name: str | None = None):
    """A user in one of the three role groups; Supervisors and Administrators get the admin site."""
    from django.contrib.auth.models import Group, User

    from tracker import roles

    user = User.objects.create_user(
        name or group.split()[0].lower(), is_staff=group != roles.AGENTS
    )
    user.groups.add(Group.objects.get(name=group))
    return user


def run_command(*args: str) -> tuple[int, str, str]:
    """Run a management command in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _empty_shared_cache() -> None:
    """With REDIS_URL the cache outlives each test's transaction: start every test from empty
    (the database cache is emptied by the rollback)."""
    if settings.REDIS_URL:
        from django.core.cache import cache

        cache.clear()


@pytest.fixture
def on_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (row locks and concurrent writers)")


# --- The D1-facing endpoints over HTTP ------------------------------------------------------

NOTIFY_URL = f"/notifications/d1/v2/issuers/{ISSUER}/cards"


@dataclass
class Storm:
    """What concurrent senders of notification POSTs saw: every answer, body and error."""

    answers: list[int] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)


def storm_senders(
    url: str, bearer: dict, deliveries: list[dict], seeds: list[int], most_per_post: int
) -> tuple[list[threading.Thread], Storm]:
    """One thread per seed, each POSTing every delivery to a live server in its own shuffled
    order, 1 + seed % most_per_post operations a POST, all starting together once started."""
    storm = Storm()
    barrier = threading.Barrier(len(seeds))
    headers = {**bearer, "Content-Type": "application/json"}

    def send(seed: int) -> None:
        mine = deliveries[:]
        random.Random(seed).shuffle(mine)
        size = 1 + seed % most_per_post
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                barrier.wait()
                for start in range(0, len(mine), size):
                    body = json.dumps({"operations": mine[start : start + size]}).encode()
                    storm.answers.append(http.post(NOTIFY_URL, content=body).status_code)
                    storm.sent.append(body)
        except Exception as e:  # noqa: BLE001 - collected for the test to assert
            storm.errors.append(e)

    return [threading.Thread(target=send, args=(seed,)) for seed in seeds], storm


TOKEN_URL = "/authz/d1/v1/oauth2/token"


def basic(client_id: str | None = None, secret: str | None = None) -> dict[str, str]:
    """An HTTP Basic Authorization header, D1's own credentials unless told otherwise."""
    pair = (
        f"{client_id or settings.D1_NOTIFY_CLIENT_ID}:{secret or settings.D1_NOTIFY_CLIENT_SECRET}"
    )
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


@pytest.fixture
def bearer(client) -> dict[str, str]:
    """An Authorization header with a token from our token endpoint, as D1 would get it."""
    response = client.post(TOKEN_URL, {"grant_type": "client_credentials"}, headers=basic())
    assert response.status_code == 200, response.content
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@contextmanager
def database_unreachable() -> Iterator[None]:
    """Point the connection at a port where nothing listens, as if PostgreSQL were down.

    Needs `django_db(transaction=True)`: the connection is closed, so no test transaction
    can be open around it.
    """
    connection.close()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = "1"
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


# --- Staff pages --------------------------------------------------------------------------------


def make_order(**overrides: Any):
    """A CardOrder saved as-is (no ingest): the page reads whatever the fields say."""
    from tracker.models import CardOrder

    fields: dict[str, Any] = {"issuer_id": ISSUER, "card_id": "crd-page-0001"}
    fields.update(overrides)
    return CardOrder.objects.create(**fields)


@pytest.fixture
def agent(db):
    """A member of the Support agents group, as the role migration set it up."""
    from django.contrib.auth.models import Group, User

    from tracker import roles

    user = User.objects.create_user("agent-test", password="agent-test-pw")
    user.groups.add(Group.objects.get(name=roles.AGENTS))
    return user


@pytest.fixture
def agent_client(client, agent):
    client.force_login(agent)
    agent.get_all_permissions()  # warm the shared permission cache, as any earlier page would
    return client


@pytest.fixture
def outsider_client(client, db):
    """Logged in, but in no group: may see no staff page."""
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("outsider", password="outsider-pw"))
    return client

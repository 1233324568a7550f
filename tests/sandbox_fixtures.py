"""Fixtures that run the D1 sandbox in-process and point Tracker's D1 client at it.

Registered for every test module by tests/conftest.py:

- `d1_key`: a throwaway EC P-256 key pair (private PEM file, public PEM, kid), once per session.
- `sandbox`: a started d1sandbox.server.Sandbox on an ephemeral port that trusts `d1_key`
  and knows D1_NOTIFY_CLIENT_ID/SECRET; it pushes nothing until a test sets `notify_url`
  (`d1.configure(notify_url=live_server.url)`), and then only when the test calls `d1.flush()`.
- `d1`: the sandbox's control client (d1sandbox.remote.SandboxRemote), with Django settings
  pointing D1_BASE_URL/D1_TOKEN_URL/the key at the sandbox, fast backoff, a cleared cache (token,
  breaker) and fresh pooled clients. Needs the database: the cache is Django's database cache.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection

from d1sandbox import keys
from d1sandbox.config import Config
from d1sandbox.remote import SandboxRemote
from d1sandbox.server import Sandbox
from tracker.d1.client import reset_clients

ISSUER = "ISS7K2M40Q"


@dataclass(frozen=True)
class D1Key:
    private_key_file: Path
    public_pem: str
    kid: str


def card(card_id: str, **spec: Any) -> dict[str, Any]:
    """A seed spec for SandboxRemote.seed(): `card("crd-1", stage="CARD_SHIPPED")`."""
    return {"issuerId": ISSUER, "cardId": card_id, **spec}


def child_env(database_url: str, sandbox, d1_key: D1Key, **settings: str) -> dict[str, str]:
    """The environment of a Tracker process (worker, command) that talks to this sandbox."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "D1_BASE_URL": sandbox.base_url,
        "D1_TOKEN_URL": sandbox.token_url,
        "D1_JWT_PRIVATE_KEY_FILE": str(d1_key.private_key_file),
        "D1_JWT_KID": d1_key.kid,
        **settings,
    }


@pytest.fixture
def database_url() -> str:
    """A DATABASE_URL for another process to open the test database (PostgreSQL only: the SQLite
    test database lives in this process's memory). Use with django_db(transaction=True)."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a test database that another process can open (PostgreSQL)")
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def d1_key(tmp_path_factory: pytest.TempPathFactory) -> D1Key:
    private = keys.new_private_pem()
    path = tmp_path_factory.mktemp("d1-key") / "d1-test-key.pem"
    path.write_bytes(private)
    return D1Key(path, keys.public_pem(private), "test-key-1")


@pytest.fixture
def sandbox(d1_key: D1Key) -> Iterator[Sandbox]:
    # notify_interval=0: notifications go out only when a test calls flush(), so tests are
    # deterministic; seed fixes every random draw.
    config = Config(
        seed=1234,
        notify_interval=0,
        notify_client_id=django_settings.D1_NOTIFY_CLIENT_ID,
        notify_client_secret=django_settings.D1_NOTIFY_CLIENT_SECRET,
    )
    running = Sandbox(config, keys={d1_key.kid: d1_key.public_pem})
    running.start()
    yield running
    running.stop()


@pytest.fixture
def d1(sandbox: Sandbox, d1_key: D1Key, settings: Any, db: None) -> Iterator[SandboxRemote]:
    settings.D1_BASE_URL = sandbox.base_url
    settings.D1_TOKEN_URL = sandbox.token_url
    settings.D1_JWT_PRIVATE_KEY_FILE = str(d1_key.private_key_file)
    settings.D1_JWT_KID = d1_key.kid
    settings.D1_BACKOFF_BASE = 0.01
    settings.D1_BACKOFF_CAP = 0.05
    settings.D1_RETRY_AFTER_CAP = 0.3
    # Transactional tests do not empty the cache table: start from no token and a closed breaker.
    cache.clear()
    reset_clients()
    remote = SandboxRemote(sandbox.url)
    yield remote
    remote.close()
    reset_clients()

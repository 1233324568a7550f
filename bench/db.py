"""The bench's own PostgreSQL databases: derive, create, migrate, connect.

The harness speaks to them with plain psycopg (it never uses Django's default connection), so it
can hold several at once: the main dataset, the 10,000-order baseline, the reconcile scratch.
"""

import subprocess
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


def name_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def derived(url: str, suffix: str) -> str:
    """The URL of a sibling database: tracker_bench -> tracker_bench_<suffix>."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name_of(url)}_{suffix}"))


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(_conninfo(url), autocommit=autocommit)


def _conninfo(url: str) -> str:
    # psycopg understands postgres:// URLs; dj-database-url's spelling postgresql:// too.
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def ensure_database(url: str) -> bool:
    """Create the database if it does not exist; True if created. Never drops anything."""
    name = name_of(url)
    # A prefix (`<word>_tracker_bench…`) lets several checkouts bench on one server side by side.
    if not name.split("_", 1)[-1].startswith("tracker_bench") and not name.startswith(
        "tracker_bench"
    ):
        # The harness truncates what it generates: refuse anyone else's database.
        raise ValueError(f"bench databases are named [prefix_]tracker_bench*, not {name!r}")
    maintenance = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with connect(maintenance) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if found:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def claim(url: str, created: bool) -> None:
    """Refuse a database the bench did not make that already holds orders: someone else's."""
    if created:
        return
    with connect(url) as conn:
        ours = conn.execute("SELECT to_regclass('bench_dataset')").fetchone()[0]
        orders = conn.execute("SELECT to_regclass('tracker_cardorder')").fetchone()[0]
        if ours or not orders:
            return
        if conn.execute("SELECT EXISTS (SELECT 1 FROM tracker_cardorder)").fetchone()[0]:
            raise ValueError(
                f"{name_of(url)} holds orders the benchmark did not write; drop it, or point"
                " BENCH_DATABASE_URL at another tracker_bench* database"
            )


def migrate(python: str, base_dir: str, env: Mapping[str, str]) -> None:
    """`manage.py migrate` in a child process with the server's environment."""
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=base_dir,
        env=dict(env),
        check=True,
        timeout=600,
    )


def server_version(url: str) -> str:
    with connect(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def settings_of(url: str) -> dict[str, str]:
    """The PostgreSQL settings that move these numbers most."""
    names = ("shared_buffers", "work_mem", "synchronous_commit", "max_connections", "jit")
    with connect(url) as conn:
        return {
            name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
            for name in names
        }


def backend_pids(url: str) -> list[int]:
    """Server processes connected to this database (to count their CPU time)."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name_of(url)],
        ).fetchall()
    return [pid for (pid,) in rows]

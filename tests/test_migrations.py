"""The migrations: the first one is the schema of the release before they were squashed, so a
database made by that release upgrades in place (docs/deploy.md, "Upgrading a database made
before the migrations were squashed")."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(database: Path, *args: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "tracker.settings",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_database_of_the_release_before_the_squash_upgrades_in_place(tmp_path):
    database = tmp_path / "earlier.sqlite3"
    # The earlier release's tables, with its own migration names recorded instead of ours.
    _manage(database, "migrate", "tracker", "0001", "-v", "0")
    earlier = _tables(database)
    assert "tracker_cardorder" in earlier and "tracker_alert" not in earlier
    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM django_migrations WHERE app = 'tracker'")
        db.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('tracker', ?, ?)",
            ["0001_initial", "2026-11-27 12:00:00"],
        )

    out = _manage(database, "migrate", "--fake-initial")

    assert "tracker.0001_orders_timeline_inbox_and_records... FAKED" in out
    assert "tracker.0003_alerts_audit_days_exports_and_pending_index... OK" in out
    assert {"tracker_alert", "tracker_lookupauditday", "tracker_exportaudit"} <= _tables(database)
    assert "No migrations to apply" in _manage(database, "migrate")

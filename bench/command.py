"""The benchmark's command: run the scenarios, print the table, write the results file."""

import io
import os
import pstats
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench import db, notifications, pages, queue, reconcile, report
from bench.procs import Context

SCENARIOS: dict[str, Callable[[Context], report.ScenarioResult]] = {
    "notifications": notifications.run,
    "pages": pages.run,
    "queue": queue.run,
    "reconcile": reconcile.run,
}
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tracker_bench"


class Command(BaseCommand):
    help = (
        "Measure Tracker against the speed budgets with real processes (gunicorn,"
        " the D1 sandbox, db_worker) on a PostgreSQL database of its own (BENCH_DATABASE_URL)."
        " Prints a table and writes var/bench/results.json; exit 1 if a budget or a scenario"
        " failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scenario",
            action="append",
            choices=list(SCENARIOS),
            help="run only this scenario (repeat for several; default: all)",
        )
        parser.add_argument(
            "--orders", type=int, help="orders in the main dataset (default 1,000,000)"
        )
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a smoke test: 10,000 orders, a few seconds per measurement",
        )
        parser.add_argument(
            "--workers",
            type=int,
            help="gunicorn workers (default 2 x cores + 1, gunicorn's advice)",
        )
        parser.add_argument(
            "--reconcile-workers",
            type=int,
            help="db_worker processes for the reconcile scenario (default 3)",
        )
        parser.add_argument(
            "--fresh-data", action="store_true", help="generate the datasets even if present"
        )
        parser.add_argument(
            "--profile",
            action="store_true",
            help="cProfile every gunicorn worker and print where the time went"
            " (slows the server: not for the budget's figures)",
        )
        parser.add_argument(
            "--output", type=Path, help="results file (default var/bench/results.json)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        base_dir = Path(settings.BASE_DIR)
        out_dir = base_dir / "var" / "bench"
        url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
        quick = options["quick"]
        if quick:
            url = db.derived(url, "quick")
        orders = options["orders"] or (10_000 if quick else 1_000_000)
        if orders < 1_000:
            raise CommandError("--orders: at least 1,000")

        def log(message: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:7.1f} s] {message}")
            self.stdout.flush()

        ctx = Context(
            base_dir=base_dir,
            out_dir=out_dir,
            python=sys.executable,
            database_url=url,
            quick=quick,
            orders=orders,
            workers=options["workers"] or 2 * (os.cpu_count() or 1) + 1,
            fresh_data=options["fresh_data"],
            profile=options["profile"],
            log=log,
            reconcile_workers=options["reconcile_workers"],
        )
        try:
            db.claim(url, db.ensure_database(url))
        except Exception as e:  # noqa: BLE001 - said in one line, never a traceback
            raise CommandError(f"cannot prepare {db.name_of(url)}: {e}") from None
        if ctx.profile:
            shutil.rmtree(out_dir / "profiles", ignore_errors=True)
        machine = report.machine_facts(base_dir, db.server_version(url))
        machine["postgresql_settings"] = db.settings_of(url)
        log(
            f"{machine['cores']} cores, load {machine['loadavg']}, database {db.name_of(url)},"
            f" {orders:,} orders, {ctx.workers} gunicorn workers"
        )
        results = [
            self._run(name, SCENARIOS[name], ctx) for name in options["scenario"] or list(SCENARIOS)
        ]
        self.stdout.write("\n" + report.table(results) + "\n")
        for result in results:
            self.stdout.write(
                f"\n{result.name}: {result.seconds:.0f} s, load average before"
                f" {result.loadavg_before} after {result.loadavg_after}"
            )
            for line in result.notes:
                self.stdout.write(f"  {line}")
        self.stdout.write("\n" + _machine_line(machine))
        if ctx.profile:
            self.stdout.write(_profile_summary(out_dir / "profiles"))
        document = {
            "started_at": datetime.now(UTC).isoformat(),
            "seconds": round(time.monotonic() - started, 1),
            "arguments": {
                "scenarios": options["scenario"] or list(SCENARIOS),
                "orders": orders,
                "quick": quick,
                "workers": ctx.workers,
                "database": db.name_of(url),
                "profile": ctx.profile,
            },
            "machine": machine,
            "scenarios": {result.name: result.as_json() for result in results},
        }
        written = report.write_json(options["output"] or out_dir / "results.json", document)
        self.stdout.write(f"Results: {written[0]} (and {written[1].name})")
        failed = any(check.verdict == report.FAIL for r in results for check in r.checks)
        if failed or any(result.status == "failed" for result in results):
            raise SystemExit(1)

    def _run(
        self, name: str, scenario: Callable[[Context], report.ScenarioResult], ctx: Context
    ) -> report.ScenarioResult:
        ctx.log(f"--- {name}")
        before, clock = report.loadavg(), time.monotonic()
        try:
            result = scenario(ctx)
        except Exception as e:  # noqa: BLE001 - one broken scenario must not hide the others
            self.stderr.write(traceback.format_exc())
            result = report.ScenarioResult(name, issue=0, status="failed", reason=_one_line(e))
        result.loadavg_before, result.loadavg_after = before, report.loadavg()
        result.seconds = round(time.monotonic() - clock, 1)
        if result.status == "skipped":
            ctx.log(f"{name} skipped: {result.reason}")
        return result


def _machine_line(machine: dict[str, Any]) -> str:
    packages = machine["packages"]
    pg = machine["postgresql_settings"]
    return (
        f"Machine: {machine['cores']} cores {machine['cpu_model']}, {machine['memory_gib']} GiB,"
        f" load at start {machine['loadavg']}; Python {machine['python']}, Django"
        f" {packages['django']}, gunicorn {packages['gunicorn']}, psycopg {packages['psycopg']},"
        f" PostgreSQL {machine['postgresql'].split()[0]} (shared_buffers {pg['shared_buffers']},"
        f" synchronous_commit {pg['synchronous_commit']}, jit {pg['jit']});"
        f" commit {machine['commit']}{' + changes' if machine['dirty'] else ''}"
    )


def _one_line(error: Exception) -> str:
    return f"{error.__class__.__name__}: {next(iter(str(error).splitlines()), '')}"[:200]


def _profile_summary(directory: Path) -> str:
    files = sorted(directory.glob("*.prof"))
    if not files:
        return "\nNo profile was written (did the workers stop cleanly?)."
    stream = io.StringIO()
    stats = pstats.Stats(*[str(path) for path in files], stream=stream)
    stats.strip_dirs()
    stream.write(f"\nProfile of {len(files)} gunicorn workers, by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(35)
    stream.write("\nBy own time:\n")
    stats.sort_stats("tottime").print_stats(25)
    text = stream.getvalue()
    (directory / "summary.txt").write_text(text)
    return text

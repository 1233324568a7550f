import threading
from argparse import ArgumentTypeError

from django.core.management.base import BaseCommand, CommandParser

from tracker.d1.schema import ISSUER_ID
from tracker.models import Sweep
from tracker.ops import schedule
from tracker.reconcile import sweep


def _issuer(value: str) -> str:
    if not ISSUER_ID.fullmatch(value):
        raise ArgumentTypeError(f"{value!r} is not a 10-character D1 issuerId")
    return value


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ArgumentTypeError(f"{value!r} is not a whole number of cards, at least 1")
    return int(value)


class Command(BaseCommand):
    help = (
        "The missed-notification sweep: ask D1 about open orders silent past their stage's"
        " threshold (through the task workers, within D1_MAX_RPS) and record what was repaired."
        " Exit 0 when a sweep ran to the end, 2 when it stopped early (D1 unavailable, no worker)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="one sweep, then exit (default)")
        mode.add_argument(
            "--every",
            type=schedule.duration,
            metavar="DURATION",
            help="a sweep every DURATION (90s, 5m, 1h) until stopped; the first after one DURATION",
        )
        parser.add_argument("--issuer", type=_issuer, metavar="ID", help="only this issuer's")
        parser.add_argument(
            "--limit", type=_positive, metavar="N", help="at most N cards per sweep"
        )
        parser.add_argument(
            "--all-open",
            action="store_true",
            help="every open order, silent or not (after D1 reported lost notifications)",
        )

    def handle(
        self,
        *args,
        once: bool,
        every: int | None,
        issuer: str | None,
        limit: int | None,
        all_open: bool = False,
        **options,
    ) -> None:
        stop = threading.Event()
        # SIGTERM and Ctrl-C end the current sweep cleanly: its record says it was interrupted
        # and its cards go back to the pool.
        with schedule.stopped_by_signals(stop):
            if every is None:
                record = sweep.run(
                    issuer_id=issuer or "", limit=limit, stop=stop, every_open=all_open
                )
                self._report(record)
                if record.stop_reason in (Sweep.Stop.BREAKER, Sweep.Stop.STALLED):
                    raise SystemExit(2)
                return
            for record in sweep.run_every(
                every, stop, issuer_id=issuer or "", limit=limit, every_open=all_open
            ):
                self._report(record)

    def _report(self, record: Sweep) -> None:
        seconds = (record.finished_at - record.started_at).total_seconds()
        self.stdout.write(
            f"Sweep {record.pk}: {record.checked} checked, {record.repaired} repaired,"
            f" {record.not_found} unknown to D1, {record.failed} failed in {seconds:.1f}s."
        )
        if record.stop_reason:
            self.stderr.write(
                f"Sweep {record.pk} stopped early ({record.get_stop_reason_display()}):"
                f" {record.stop_detail}"
            )

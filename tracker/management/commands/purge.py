from argparse import ArgumentTypeError

from django.core.management.base import BaseCommand, CommandParser

from tracker.ops import retention, schedule


def _kind(value: str) -> str:
    if value not in retention.KINDS:
        raise ArgumentTypeError(f"{value!r} is not one of {', '.join(retention.KINDS)}")
    return value


class Command(BaseCommand):
    help = (
        "Remove what is older than its retention age (TRACKER_RETAIN_*): processed notification"
        " bodies, raw JSON of timeline events, single lookup audit rows (kept as daily counts),"
        " finished task results, sweeps, resolved alerts, and finished orders if set."
        " Works in short batches; safe to run while Tracker serves."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        schedule.add_arguments(parser, "purge")
        parser.add_argument(
            "--only", type=_kind, action="append", metavar="KIND", help="only this kind (repeat)"
        )
        parser.add_argument("--batch", type=int, metavar="N", help="rows per transaction")
        parser.add_argument(
            "--archive",
            metavar="FILE",
            help="append each finished order removed, with its timeline, to FILE (JSON Lines)",
        )

    def handle(
        self,
        *args,
        once: bool,
        every: int | None,
        only: list[str] | None,
        batch: int | None,
        archive: str | None,
        **options,
    ) -> None:
        kinds = tuple(only or retention.KINDS)

        def run() -> None:
            target = retention.open_archive(archive) if archive else None
            try:
                done = retention.purge(kinds, batch=batch, archive=target)
            finally:
                if target is not None:
                    target.close()
            for purged in done:
                kept = "kept forever" if purged.cutoff is None else f"{purged.rows} rows"
                self.stdout.write(f"{purged.kind}: {kept}")
            self.stdout.flush()

        if every is None:
            run()
        else:
            schedule.repeat(every, run)

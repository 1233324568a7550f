import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tracker import applier


class Command(BaseCommand):
    help = (
        "Apply the notification bodies the endpoint stored, in batches, until stopped (SIGTERM or"
        " Ctrl-C end it after the current batch). Run as many as needed, on any host."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="apply what is pending, then exit")
        parser.add_argument(
            "--poll", type=float, help="seconds an idle applier waits (default TRACKER_APPLY_POLL)"
        )

    def handle(self, *args: Any, once: bool, poll: float | None, **options: Any) -> None:
        if once:
            self.stdout.write(f"{applier.drain()} notification bodies applied.")
            return
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        applier.run(stopping.is_set, poll=poll)

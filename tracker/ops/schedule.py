"""The `--once | --every DURATION` loop that `manage.py alerts` and `manage.py purge` share."""

import logging
import signal
import threading
from argparse import ArgumentTypeError
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import CommandParser
from django.db import DatabaseError, close_old_connections

from tracker.env import parse_duration

logger = logging.getLogger(__name__)


def duration(value: str) -> int:
    """An argparse type: a duration such as 90s, 5m or 1h30m, in seconds."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ArgumentTypeError(str(e)) from None


def add_arguments(parser: CommandParser, what: str) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help=f"{what} once, then exit (default)")
    mode.add_argument(
        "--every",
        type=duration,
        metavar="DURATION",
        help=f"{what} every DURATION (90s, 5m, 1h) until stopped, the first at once",
    )


def repeat(every: int, run: Callable[[], None]) -> None:
    """Run now and then every `every` seconds until SIGTERM or Ctrl-C; a database error in one
    round is logged and the next round tries again."""
    stop = threading.Event()
    with stopped_by_signals(stop):
        while not stop.is_set():
            try:
                run()
            except DatabaseError as e:
                logger.error("database unavailable, trying again later: %s", type(e).__name__)
            finally:
                close_old_connections()
            stop.wait(every)


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (systemd stop) and Ctrl-C set `stop`, so the current round ends cleanly; the
    previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    signums = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

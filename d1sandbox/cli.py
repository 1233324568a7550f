"""The sandbox command line: `python -m d1sandbox` and the demo's `manage.py d1_sandbox`."""

import argparse
import json
import signal
import threading
from collections.abc import Callable
from typing import Any

from d1sandbox.config import Config, ConfigError, Faults, update
from d1sandbox.server import Sandbox


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both entry points take; the caller adds --public-key and --kid."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--speed", type=float, help="lifecycle speed-up (120: 2 h pass in 1 min)")
    parser.add_argument("--seed", type=int, help="random seed, for repeatable runs")
    parser.add_argument("--notify-url", help="Tracker's base URL to push notifications to")
    parser.add_argument("--drop-share", type=float, help="share of notifications dropped")
    parser.add_argument("--duplicate-share", type=float, help="share sent twice")
    parser.add_argument("--reorder-share", type=float, help="share sent out of order")
    parser.add_argument(
        "--config", default="{}", help="JSON object of any other setting (config.Config fields)"
    )
    parser.add_argument("--faults", default="{}", help="JSON object of faults to start with")


def settings_from(options: dict[str, Any], **config: Any) -> tuple[Config, Faults]:
    """Config and Faults from the parsed options; `config` gives defaults the options override.

    Raises ConfigError (a ValueError) naming the bad setting.
    """
    flags = {
        "speed": options["speed"],
        "seed": options["seed"],
        "notify_url": options["notify_url"],
        "notify_drop_share": options["drop_share"],
        "notify_duplicate_share": options["duplicate_share"],
        "notify_reorder_share": options["reorder_share"],
    }
    settings, faults = Config(**config), Faults()
    try:
        update(settings, json.loads(options["config"]))
        update(settings, {key: value for key, value in flags.items() if value is not None})
        update(faults, json.loads(options["faults"]))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return settings, faults


def serve(sandbox: Sandbox, host: str, port: int, say: Callable[[str], None]) -> None:
    """Start the sandbox, say where it listens, and serve until SIGTERM or Ctrl-C.

    Raises OSError when the address is taken.
    """
    sandbox.start(host, port)
    # Whoever started this process may be waiting for this line (the URL is its 4th word).
    say(
        f"D1 sandbox on {sandbox.url}  (D1_BASE_URL={sandbox.base_url},"
        f" D1_TOKEN_URL={sandbox.token_url})"
    )
    if sandbox.state.config.notify_url:
        say(f"  pushing notifications to {sandbox.state.config.notify_url}")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()

"""`python -m d1sandbox --public-key FILE`: the D1 sandbox as a process of its own, no Django."""

import argparse
import sys
from pathlib import Path

from d1sandbox import cli
from d1sandbox.config import ConfigError
from d1sandbox.server import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m d1sandbox",
        description="Run the D1 sandbox: a stand-in for Thales D1 with its own in-memory state.",
    )
    cli.add_arguments(parser)
    parser.add_argument(
        "--public-key", type=Path, required=True, help="PEM public key assertions are signed with"
    )
    parser.add_argument("--kid", default="demo", help="its key id (Tracker's D1_JWT_KID)")
    parser.add_argument("--notify-client-id", default="", help="Tracker's D1_NOTIFY_CLIENT_ID")
    parser.add_argument(
        "--notify-client-secret", default="", help="Tracker's D1_NOTIFY_CLIENT_SECRET"
    )
    options = vars(parser.parse_args(argv))
    try:
        config, faults = cli.settings_from(
            options,
            notify_client_id=options["notify_client_id"],
            notify_client_secret=options["notify_client_secret"],
        )
        public_key = options["public_key"].read_text()
        sandbox = Sandbox(config, faults, {options["kid"]: public_key})
        cli.serve(sandbox, options["host"], options["port"], lambda line: print(line, flush=True))
    except ConfigError as e:
        parser.exit(2, f"bad sandbox setting: {e}\n")
    except (OSError, ValueError) as e:
        parser.exit(1, f"{e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

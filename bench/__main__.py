"""`python -m bench [--quick] [--scenario NAME]…` (`make bench`): the benchmark (command.py)."""

import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    django.setup()
    from bench.command import Command  # the scenarios import Tracker's models: after setup()

    Command().run_from_argv(["python", "-m bench", *sys.argv[1:]])  # usage: python -m bench


if __name__ == "__main__":
    main()

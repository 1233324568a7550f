#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as e:
        # A bad setting is an operator's mistake, not a bug: say which one, without a traceback.
        sys.exit(f"Configuration error: {e}")


if __name__ == "__main__":
    main()

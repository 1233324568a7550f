from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from d1sandbox import cli, keys
from d1sandbox.config import ConfigError
from d1sandbox.server import Sandbox


class Command(BaseCommand):
    help = (
        "Run the D1 sandbox: a stand-in for Thales D1 with its own in-memory state, set up from"
        " Tracker's settings (`python -m d1sandbox` runs it without Django)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)
        parser.add_argument(
            "--public-key",
            type=Path,
            help="PEM public key assertions must be signed with"
            " (default: derived from D1_JWT_PRIVATE_KEY_FILE)",
        )
        parser.add_argument("--kid", help="its key id (default: D1_JWT_KID)")

    def handle(self, *args, **options) -> None:
        try:
            config, faults = cli.settings_from(
                options,
                notify_client_id=settings.D1_NOTIFY_CLIENT_ID,
                notify_client_secret=settings.D1_NOTIFY_CLIENT_SECRET,
            )
        except ConfigError as e:
            raise CommandError(f"bad sandbox setting: {e}") from None
        kid = options["kid"] or settings.D1_JWT_KID
        try:
            sandbox = Sandbox(config, faults, {kid: self._key(options)})
        except ValueError as e:
            raise CommandError(f"the public key is unusable: {e}") from None

        def say(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            cli.serve(sandbox, options["host"], options["port"], say)
        except OSError as e:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {e}"
            ) from None

    def _key(self, options: dict) -> str:
        if options["public_key"]:
            try:
                return options["public_key"].read_text()
            except OSError as e:
                raise CommandError(f"--public-key: {e}") from None
        private = Path(settings.D1_JWT_PRIVATE_KEY_FILE)
        if not private.exists() and not settings.DEBUG:
            raise CommandError(f"no --public-key and no private key at {private}")
        public, created = keys.ensure_key_pair(private)
        if created:
            self.stdout.write(f"Created the demo key pair {private} (and .pub.pem).")
        return public

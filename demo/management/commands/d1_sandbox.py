import json
import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracker.sandbox import keys
from tracker.sandbox.config import Config, ConfigError, Faults, update
from tracker.sandbox.server import Sandbox


class Command(BaseCommand):
    help = "Run the D1 sandbox: a stand-in for Thales D1 with its own in-memory state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument(
            "--public-key",
            type=Path,
            help="PEM public key assertions must be signed with"
            " (default: derived from D1_JWT_PRIVATE_KEY_FILE)",
        )
        parser.add_argument("--kid", help="its key id (default: D1_JWT_KID)")
        parser.add_argument(
            "--speed", type=float, help="lifecycle speed-up (120: 2 h pass in 1 min)"
        )
        parser.add_argument("--seed", type=int, help="random seed, for repeatable runs")
        parser.add_argument("--notify-url", help="Tracker's base URL to push notifications to")
        parser.add_argument("--drop-share", type=float, help="share of notifications dropped")
        parser.add_argument("--duplicate-share", type=float, help="share sent twice")
        parser.add_argument("--reorder-share", type=float, help="share sent out of order")
        parser.add_argument(
            "--config", default="{}", help="JSON object of any other setting (README, sandbox)"
        )
        parser.add_argument("--faults", default="{}", help="JSON object of faults to start with")

    def handle(self, *args, **options) -> None:
        config, faults = self._settings(options)
        kid = options["kid"] or settings.D1_JWT_KID
        try:
            sandbox = Sandbox(config, faults, {kid: self._key(options)})
        except ValueError as e:
            raise CommandError(f"the public key is unusable: {e}") from None
        try:
            sandbox.start(options["host"], options["port"])
        except OSError as e:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {e}"
            ) from None
        self.stdout.write(
            f"D1 sandbox on {sandbox.url}  (D1_BASE_URL={sandbox.base_url},"
            f" D1_TOKEN_URL={sandbox.token_url})"
        )
        if config.notify_url:
            self.stdout.write(f"  pushing notifications to {config.notify_url}")
        self.stdout.flush()  # whoever started this process may be waiting for the URL
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.stop()

    def _settings(self, options: dict) -> tuple[Config, Faults]:
        config = Config(
            notify_client_id=settings.D1_NOTIFY_CLIENT_ID,
            notify_client_secret=settings.D1_NOTIFY_CLIENT_SECRET,
        )
        faults = Faults()
        flags = {
            "speed": options["speed"],
            "seed": options["seed"],
            "notify_url": options["notify_url"],
            "notify_drop_share": options["drop_share"],
            "notify_duplicate_share": options["duplicate_share"],
            "notify_reorder_share": options["reorder_share"],
        }
        try:
            update(config, json.loads(options["config"]))
            update(config, {key: value for key, value in flags.items() if value is not None})
            update(faults, json.loads(options["faults"]))
        except (ValueError, ConfigError) as e:
            raise CommandError(f"bad sandbox setting: {e}") from None
        return config, faults

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

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.management.utils import get_random_secret_key

from d1sandbox import keys
from d1sandbox.remote import SandboxRemote
from demo import data

# The sandbox plays D1 at two hours of D1 time per minute, and loses a few notifications so that
# reconciliation has something to repair.
SANDBOX_SPEED = 120
SANDBOX_DROP_SHARE = 0.05
# The missed-notification sweep runs this often (its first sweep one interval after start, when
# the sandbox knows the demo orders); the supervisors' page shows what it repaired.
RECONCILE_EVERY = "2m"
# Alerts are evaluated this often; any card a sweep repairs raises one, mailed to files under
# var/mail and posted to a webhook catcher whose output shows in this terminal.
ALERTS_EVERY = "30s"


class Command(BaseCommand):
    help = "Prepare the demo database and run every Tracker process until Ctrl-C (`make demo`)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument("--orders", type=int, default=200, help="demo orders to create")
        parser.add_argument(
            "--sandbox-port", type=int, default=8001, help="D1 sandbox port (D1_BASE_URL follows)"
        )
        parser.add_argument(
            "--webhook-port", type=int, default=8002, help="port of the alert webhook catcher"
        )

    def handle(
        self, *args, port: int, orders: int, sandbox_port: int, webhook_port: int, **options
    ) -> None:
        if not settings.DEBUG:
            raise CommandError("the demo runs with DJANGO_DEBUG=1 (make demo sets it)")
        call_command("migrate", verbosity=0)
        key_file = Path(settings.D1_JWT_PRIVATE_KEY_FILE)
        if keys.ensure_key_pair(key_file)[1]:
            self.stdout.write(f"Created the demo D1 key pair {key_file}.")
        logins = data.seed_users()
        created = data.seed_orders(orders)
        self.stdout.write(f"Demo database ready ({created} new orders).")
        self.sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        env = {
            **os.environ,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY or get_random_secret_key(),
            # In the demo the sandbox is D1, for every process.
            "D1_BASE_URL": f"{self.sandbox_url}/banking/v1",
            "D1_TOKEN_URL": f"{self.sandbox_url}/authz/v1/oauth2/token",
            # The admin site's production-site filter offers the demo's sites.
            "TRACKER_PRODUCTION_SITES": os.environ.get("TRACKER_PRODUCTION_SITES")
            or ",".join(data.SITES),
            **_alert_env(webhook_port),
        }
        services = [
            *self._services(port),
            ("webhook", ["webhook_catcher", f"--port={webhook_port}"]),
            ("alerts", ["alerts", f"--every={ALERTS_EVERY}"]),
        ]
        processes = {
            name: subprocess.Popen([sys.executable, "manage.py", *argv], env=env)
            for name, argv in services
        }
        self._seed_sandbox(processes["sandbox"])
        self.stdout.write(
            f"\nTracker is running on http://127.0.0.1:{port}/  (Ctrl-C stops everything)"
        )
        for username, password, role in logins:
            self.stdout.write(f"  {role:<16} {username} / {password}")
        self.stdout.write(
            f"Alerts (every {ALERTS_EVERY}): mailed to files in var/mail/, and printed here by"
            f" the webhook catcher on port {webhook_port}."
        )
        try:
            while all(process.poll() is None for process in processes.values()):
                time.sleep(0.5)
            failed = [name for name, process in processes.items() if process.poll() is not None]
            self.stderr.write(f"{', '.join(failed)} stopped; stopping the demo.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            _stop(processes.values())

    def _services(self, port: int) -> list[tuple[str, list[str]]]:
        sandbox = [
            "d1_sandbox",
            f"--port={self.sandbox_url.rsplit(':', 1)[1]}",
            f"--notify-url=http://127.0.0.1:{port}",
            f"--speed={SANDBOX_SPEED}",
            f"--drop-share={SANDBOX_DROP_SHARE}",
        ]
        # Two task workers: bulk re-checks wait on D1, so one slow card does not hold the rest.
        worker = ["db_worker", "--no-reload", "--no-startup-delay"]
        return [
            ("web", ["runserver", f"127.0.0.1:{port}", "--noreload"]),
            ("sandbox", sandbox),
            ("worker-1", worker),
            ("worker-2", worker),
            # Every open order, not only silent ones: at the sandbox's speed the orders whose
            # notification it dropped are found within minutes, and the sweep-drift alert fires.
            ("reconcile", ["reconcile", f"--every={RECONCILE_EVERY}", "--all-open"]),
            # On SQLite the web process also applies right after answering (inline).
            ("applier", ["apply_notifications"]),
        ]

    def _seed_sandbox(self, process: subprocess.Popen) -> None:
        """Tell the sandbox about the demo orders, so live refresh finds them and they move on."""
        remote = SandboxRemote(self.sandbox_url)
        try:
            deadline = time.monotonic() + 30
            while not remote.healthy():
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stderr.write("The D1 sandbox did not start; live refresh will fail.")
                    return
                time.sleep(0.2)
            cards = data.sandbox_cards(settings.D1_ISSUER_IDS[0])
            remote.seed(*cards)
            self.stdout.write(
                f"The D1 sandbox on {self.sandbox_url} knows the {len(cards)} orders."
            )
        finally:
            remote.close()


def _alert_env(webhook_port: int) -> dict[str, str]:
    """Alerts in the demo: e-mail as files under var/mail, chat to the local webhook catcher."""
    return {
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "DJANGO_EMAIL_FILE_PATH": str(Path(settings.BASE_DIR) / "var" / "mail"),
        "TRACKER_ALERT_EMAILS": os.environ.get("TRACKER_ALERT_EMAILS") or "ops@example.test",
        "TRACKER_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/demo-alerts",
        "TRACKER_ALERT_THRESHOLDS": os.environ.get("TRACKER_ALERT_THRESHOLDS") or "sweep_drift=0",
    }


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()

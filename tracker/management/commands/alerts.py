from django.core.management.base import BaseCommand, CommandParser

from tracker.ops import alerts, schedule


class Command(BaseCommand):
    help = (
        "Evaluate the alert rules: open an alert and send it (e-mail, webhook) when a condition"
        " starts to hold, send 'resolved' when it stops. Run it with --every 1m next to the"
        " web server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        schedule.add_arguments(parser, "evaluate the rules")

    def handle(self, *args, once: bool, every: int | None, **options) -> None:
        if every is None:
            self._evaluate()
        else:
            schedule.repeat(every, self._evaluate)

    def _evaluate(self) -> None:
        result = alerts.evaluate()
        for alert in result.fired:
            about = f" {alert.subject}" if alert.subject else ""
            self.stdout.write(f"FIRED {alert.rule}{about}: {alert.summary}")
        for alert in result.resolved:
            about = f" {alert.subject}" if alert.subject else ""
            self.stdout.write(f"RESOLVED {alert.rule}{about}")
        self.stdout.flush()

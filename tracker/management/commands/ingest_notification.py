from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracker import inbox


class Command(BaseCommand):
    help = (
        "Apply saved notification bodies through the same path as the endpoint "
        "(stored in the inbox, source 'notification'), in the order given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
        parser.add_argument(
            "--issuer", help="issuerId (default: the only one D1_ISSUER_IDS serves)"
        )

    def handle(self, *args, files: list[Path], issuer: str | None, **options) -> None:
        issuer_id = issuer or _only_issuer()
        for path in files:
            try:
                body = path.read_bytes()
            except OSError as e:
                raise CommandError(f"cannot read {path}: {e.strerror}") from None
            pk = inbox.store(issuer_id, body, {"x-tracker-origin": f"ingest_notification {path}"})
            report = inbox.process(pk)
            if report.error:
                self.stdout.write(f"{path}: rejected: {report.error}")
            for entry in report.results:
                self.stdout.write(_line(path, entry))


def _only_issuer() -> str:
    if len(settings.D1_ISSUER_IDS) != 1:
        raise CommandError("several issuers are served: name one with --issuer")
    return settings.D1_ISSUER_IDS[0]


def _line(path: Path, entry: dict) -> str:
    if "error" in entry:
        return f"{path} #{entry['index']}: quarantined: {entry['error']}"
    return (
        f"{path} #{entry['index']}: {entry['cardId']} {entry['status'] or '-'}"
        f" -> {entry['verdict']}"
    )

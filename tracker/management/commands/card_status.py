import json

from django.core.management.base import BaseCommand, CommandParser

from tracker import live
from tracker.d1.client import D1Error, D1NotFound
from tracker.models import CardOrder
from tracker.serialize import order_json


class Command(BaseCommand):
    help = (
        "Print the cached state of one card order; --live fetches it from D1 first."
        " Exit 0 found, 1 not found, 2 D1 unavailable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("issuer_id")
        parser.add_argument("card_id")
        parser.add_argument("--json", action="store_true", help="one JSON object (CONTRACT §5)")
        parser.add_argument(
            "--live", action="store_true", help="fetch from D1 and apply it before printing"
        )

    def handle(
        self, *args, issuer_id: str, card_id: str, json: bool, live: bool, **options
    ) -> None:
        if live:
            self._refresh(issuer_id, card_id)
        order = CardOrder.objects.filter(issuer_id=issuer_id, card_id=card_id).first()
        if order is None:
            self.stderr.write(f"No order for card {card_id} of issuer {issuer_id}.")
            raise SystemExit(1)
        data = order_json(order, order.events.order_by("received_at", "id"))
        if json:
            self.stdout.write(_dumps(data))
        else:
            self.stdout.write(_text(data))

    def _refresh(self, issuer_id: str, card_id: str) -> None:
        # Expected failures end with one line and an exit code, never a traceback (CONTRACT §5).
        try:
            live.refresh(issuer_id, card_id)
        except ValueError as e:
            self.stderr.write(str(e))
            raise SystemExit(1) from None
        except D1NotFound:
            self.stderr.write(f"D1 does not know card {card_id} of issuer {issuer_id}.")
            raise SystemExit(1) from None
        except D1Error as e:
            self.stderr.write(f"D1 unavailable: {e}")
            raise SystemExit(2) from None


def _dumps(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def _text(data: dict) -> str:
    flags = [
        name
        for name, on in (
            ("LATE", data["late"]),
            ("CONFLICT", data["conflict"]),
            (f"UNRECOGNIZED {data['unrecognizedStatus']}", data["unrecognizedStatus"]),
        )
        if on
    ]
    lines = [
        f"{data['issuerId']}/{data['cardId']}  {data['stage'] or '(no stage yet)'}"
        f"  {data['operationStatus'] or ''}  {' '.join(flags)}".rstrip(),
    ]
    for label, key in (
        ("operation", "operationId"),
        ("request", "issuerRequestId"),
        ("input file", "inputFileName"),
        ("due", "dueDate"),
        ("site", "productionSite"),
        ("error", "errorCode"),
        ("reason", "reason"),
        ("last event", "lastEventAt"),
        ("last checked", "lastCheckedAt"),
    ):
        if data[key]:
            lines.append(f"  {label:<13}{data[key]}")
    if data["shipment"]:
        shipment = data["shipment"]
        lines.append(
            f"  {'shipment':<13}{shipment['carrier'] or ''} {shipment['trackingNumber'] or ''}"
            f" {shipment['status'] or ''}: {shipment['message'] or ''}"
        )
    lines.append(f"  history ({data['duplicatesReceived']} duplicates left out):")
    for event in data["history"]:
        lines.append(
            f"    {event['receivedAt']}  {event['stage'] or '-':<24} {event['verdict']:<13}"
            f"{event['source']}{'  ' + event['shipmentStatus'] if event['shipmentStatus'] else ''}"
        )
    return "\n".join(lines)

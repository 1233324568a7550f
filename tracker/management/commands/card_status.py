import json

from django.core.management.base import BaseCommand, CommandParser

from tracker.models import CardOrder
from tracker.serialize import order_json


class Command(BaseCommand):
    help = "Print the cached state of one card order. Exit 0 found, 1 not found."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("issuer_id")
        parser.add_argument("card_id")
        parser.add_argument("--json", action="store_true", help="one JSON object (CONTRACT §5)")

    def handle(self, *args, issuer_id: str, card_id: str, json: bool, **options) -> None:
        order = CardOrder.objects.filter(issuer_id=issuer_id, card_id=card_id).first()
        if order is None:
            self.stderr.write(f"No order for card {card_id} of issuer {issuer_id}.")
            raise SystemExit(1)
        data = order_json(order, order.events.order_by("received_at", "id"))
        if json:
            self.stdout.write(_dumps(data))
        else:
            self.stdout.write(_text(data))


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

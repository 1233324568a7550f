"""The JSON shape of an order (CONTRACT §5, `card_status --json`)."""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tracker.models import CardOrder, TimelineEvent


def instant(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order_json(order: CardOrder, events: Iterable[TimelineEvent]) -> dict[str, Any]:
    """The order and its history, oldest event first, absent values as None."""
    shipment = None
    if order.carrier or order.tracking_number or order.shipment_status:
        shipment = {
            "carrier": order.carrier or None,
            "trackingNumber": order.tracking_number or None,
            "status": order.shipment_status or None,
            "message": order.shipment_message or None,
            "trackingUrl": order.tracking_url or None,
        }
    due = instant(order.due_at) if order.due_at else order.due_date and order.due_date.isoformat()
    return {
        "issuerId": order.issuer_id,
        "cardId": order.card_id,
        "operationId": order.operation_id or None,
        "stage": order.stage or None,
        "operationStatus": order.operation_status or None,
        "unrecognizedStatus": order.unrecognized_status or None,
        "conflict": order.conflict,
        "issuerRequestId": order.issuer_request_id or None,
        "inputFileName": order.input_file_name or None,
        "dueDate": due or None,
        "late": order.is_late(),
        "productionSite": order.production_site or None,
        "errorCode": order.error_code or None,
        "error": order.error or None,
        "reason": order.reason or None,
        "startTime": instant(order.start_time),
        "endTime": instant(order.end_time),
        "shipment": shipment,
        "lastEventAt": instant(order.last_event_at),
        "lastCheckedAt": instant(order.last_checked_at),
        "duplicatesReceived": order.duplicates_received,
        "history": [
            {
                "stage": event.status or None,
                "operationStatus": event.operation_status or None,
                "shipmentStatus": event.shipment_status or None,
                "source": event.source,
                "verdict": event.verdict,
                "receivedAt": instant(event.received_at),
            }
            for event in events
        ],
    }

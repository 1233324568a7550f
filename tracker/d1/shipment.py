"""Carrier shipment statuses (REFERENCE §5) sorted into the buckets a dashboard needs.

D1 does not publish the carrier status vocabulary; its carrier codes follow tracking aggregators'
slugs, so the defaults below follow that style. `D1_SHIPMENT_STATUS_MAP` adds or overrides entries.
"""

from django.conf import settings

IN_TRANSIT = "in_transit"
DELIVERED = "delivered"
PROBLEM = "problem"
RETURNED = "returned"
UNKNOWN = "unknown"

DEFAULT_MAP = {
    "Pending": IN_TRANSIT,
    "InfoReceived": IN_TRANSIT,
    "InTransit": IN_TRANSIT,
    "OutForDelivery": IN_TRANSIT,
    "AvailableForPickup": IN_TRANSIT,
    "Delivered": DELIVERED,
    "AttemptFail": PROBLEM,
    "Exception": PROBLEM,
    "Expired": PROBLEM,
    "ReturnToSender": RETURNED,
    "Returned": RETURNED,
}


def status_map() -> dict[str, str]:
    return {**DEFAULT_MAP, **settings.D1_SHIPMENT_STATUS_MAP}


def bucket(status: str | None) -> str:
    """The dashboard bucket of a carrier status; `unknown` for anything not mapped."""
    if not status:
        return UNKNOWN
    return status_map().get(status, UNKNOWN)


def statuses_in(*buckets: str) -> list[str]:
    """Every mapped carrier status that falls in one of these buckets (for SQL filters)."""
    return sorted(status for status, b in status_map().items() if b in buckets)

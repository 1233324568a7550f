"""How a card walks D1's stages (REFERENCE §3) in the sandbox, and the operation objects it shows.

An ordered card gets a plan: a list of events, each becoming visible at a sandbox time. Typical
D1 durations are divided by Config.speed. A configurable share of cards ends in DATA_EXCEPTION,
is canceled, or passes through a status Tracker does not know; shipped cards get several carrier
events with a carrier, a tracking number and an https tracking URL.
"""

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from d1sandbox.config import Config

REQUESTED = "CARD_PROD_REQUESTED"
PREPARED = "DATA_PREPARED"
READY = "CARD_PROD_READY"
ONGOING = "CARD_PROD_ONGOING"
DONE = "CARD_PROD_DONE"
SHIPPED = "CARD_SHIPPED"
DATA_EXCEPTION = "DATA_EXCEPTION"
CANCELED = "CARD_PROD_CANCELED"
PROGRESS = (REQUESTED, PREPARED, READY, ONGOING, DONE, SHIPPED)
ENDINGS = frozenset({DATA_EXCEPTION, CANCELED, "CARD_PROD_EXCEPTION", "CARD_RETURNED"})
# Statuses D1 may add one day; Tracker must store them and flag them (REFERENCE §3).
UNKNOWN_STATUSES = ("CARD_PROD_ON_HOLD", "CARD_PROD_QUALITY_REVIEW")

# Mean seconds (at speed 1) from the previous event to this one; each draw is 0.5x to 1.5x.
_MEAN_DELAY = {
    REQUESTED: 0,
    PREPARED: 10 * 60,
    DATA_EXCEPTION: 10 * 60,
    READY: 60 * 60,
    "unknown": 30 * 60,
    ONGOING: 3 * 3600,
    DONE: 60 * 60,
    CANCELED: 30 * 60,
    SHIPPED: 2 * 3600,
    "carrier": 8 * 3600,
}
CARRIER_EVENTS = (
    ("InfoReceived", "Shipment information received by the carrier."),
    ("InTransit", "Parcel sorted at regional hub."),
    ("OutForDelivery", "Out for delivery."),
    ("Delivered", "Parcel delivered to the recipient's letterbox."),
)
CARRIERS = (
    ("la-poste-colissimo", "https://www.laposte.fr/outils/suivre-vos-envois?code={}"),
    ("dhl", "https://www.dhl.com/global-en/home/tracking.html?tracking-id={}"),
    ("ups", "https://www.ups.com/track?tracknum={}"),
    ("fedex", "https://www.fedex.com/fedextrack/?trknbr={}"),
    ("deutsch-post", "https://www.deutschepost.de/sendung/simpleQuery.html?form.sendungsnummer={}"),
    ("singapore-post", "https://www.singpost.com/track-items?trackingid={}"),
)
SITES = ("PC-FR-GEM-01", "PC-DE-MUC-02", "PC-SG-SIN-01")
_DATA_ERRORS = (
    ("FIELD_INVALID_VALUE", "embossing.line2", "Embossing line 2 exceeds the characters allowed."),
    ("FIELD_INVALID_FORMAT", "cardholder.name", "Cardholder name holds characters the card lacks."),
)


@dataclass
class Step:
    """One status change, before it is placed in time."""

    status: str
    operation_status: str = "PENDING"
    delay: float = 0.0  # seconds after the previous step, at speed 1
    shipment_status: str | None = None
    shipment_message: str | None = None
    error_code: str | None = None
    error: str | None = None
    reason: str | None = None


@dataclass
class Event:
    at: float  # sandbox epoch seconds when it becomes visible
    step: Step | None = None
    raw: dict[str, Any] | None = None  # a seeded operation object, shown verbatim
    pushed: bool = False


@dataclass
class Card:
    issuer_id: str
    card_id: str
    operation_id: str
    start_time: str
    issuer_request_id: str | None = None
    due_date: str | None = None
    production_site: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    end_time: str | None = None  # set when seeded operations already carried one
    events: list[Event] = field(default_factory=list)

    def visible(self, now: float) -> list[Event]:
        return [event for event in self.events if event.at <= now]

    def current(self, now: float) -> dict[str, Any] | None:
        """The operation object D1 answers with now: the latest visible event."""
        shown = self.visible(now)
        return self.render(shown[-1]) if shown else None

    def render(self, event: Event) -> dict[str, Any]:
        """The operation object for one event, as D1 would send it."""
        if event.raw is not None:
            return event.raw
        step = event.step
        assert step is not None
        op: dict[str, Any] = {
            "operationId": self.operation_id,
            "operation": "PRODUCE",
            "status": step.operation_status,
            "startTime": self.start_time,
            "cardId": self.card_id,
        }
        ended = self._end_time(event)
        if ended:
            op["endTime"] = ended
        if step.error_code:
            op["errorCode"], op["error"] = step.error_code, step.error
        if self.issuer_request_id:
            op["issuerRequestId"] = self.issuer_request_id
        details: dict[str, Any] = {"status": step.status}
        if step.status != REQUESTED:
            # D1 computes dueDate and picks the site once it has processed the data.
            details.update(dueDate=self.due_date, productionSite=self.production_site)
        if step.reason:
            details["reason"] = step.reason
        if step.shipment_status:
            details["shipment"] = {
                "carrier": self.carrier,
                "trackingNumber": self.tracking_number,
                "status": step.shipment_status,
                "message": step.shipment_message,
                "trackingUrl": self.tracking_url,
            }
        op["details"] = details
        return op

    def _end_time(self, event: Event) -> str | None:
        # endTime appears at completion and stays the same on every later event.
        if self.end_time:
            return self.end_time
        for candidate in self.events:
            if candidate.step is not None and candidate.step.operation_status != "PENDING":
                return iso(candidate.at) if candidate.at <= event.at else None
        return None


def new_card(
    issuer_id: str,
    card_id: str,
    now: float,
    rng: random.Random,
    *,
    issuer_request_id: str | None = None,
) -> Card:
    """A freshly ordered card with its identity, site, due date and carrier drawn."""
    carrier, url = rng.choice(CARRIERS)
    tracking = f"{rng.randrange(10**11, 10**12)}"
    return Card(
        issuer_id=issuer_id,
        card_id=card_id,
        operation_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        start_time=iso(now),
        issuer_request_id=issuer_request_id,
        # D+1 (REFERENCE §7), not scaled by speed: it is a calendar date.
        due_date=(datetime.fromtimestamp(now, UTC) + timedelta(days=1)).date().isoformat(),
        production_site=rng.choice(SITES),
        carrier=carrier,
        tracking_number=tracking,
        tracking_url=url.format(tracking),
    )


def adopt(card: Card, operations: list[dict[str, Any]]) -> None:
    """Take identity, site, due date and carrier from seeded operation objects (oldest first)."""
    for op in operations:
        details = op.get("details") or {}
        shipment = details.get("shipment") or {}
        card.operation_id = op.get("operationId") or card.operation_id
        card.start_time = op.get("startTime") or card.start_time
        card.issuer_request_id = (
            op.get("issuerRequestId") or details.get("issuerRequestId") or card.issuer_request_id
        )
        card.due_date = details.get("dueDate") or card.due_date
        card.production_site = details.get("productionSite") or card.production_site
        card.carrier = shipment.get("carrier") or card.carrier
        card.tracking_number = shipment.get("trackingNumber") or card.tracking_number
        card.tracking_url = shipment.get("trackingUrl") or card.tracking_url
        card.end_time = op.get("endTime") or card.end_time


def history_to(stage: str) -> list[Step]:
    """The steps that lead to `stage` on the straight path (for seeding a card at a stage)."""
    if stage == DATA_EXCEPTION:
        code, error, reason = _DATA_ERRORS[0]
        return [Step(REQUESTED), _data_exception(code, error, reason)]
    if stage == CANCELED:
        return [Step(REQUESTED), Step(PREPARED), _canceled()]
    if stage in PROGRESS:
        steps = [Step(status) for status in PROGRESS[: PROGRESS.index(stage) + 1]]
        if stage == SHIPPED:
            steps[-1] = _carrier_step(SHIPPED, 0)
        return steps
    return [Step(REQUESTED), Step(PREPARED), Step(READY), Step(stage, reason="Held for review.")]


def plan_after(
    rng: random.Random, config: Config, last: str | None, shipment_status: str | None = None
) -> list[Step]:
    """The steps still to come after the status `last` (None: a new order), drawn at random."""
    if last in ENDINGS:
        return []
    if last == SHIPPED:
        done = [name for name, _ in CARRIER_EVENTS]
        start = done.index(shipment_status) + 1 if shipment_status in done else 1
        return _timed(rng, [_carrier_step(SHIPPED, i) for i in range(start, len(CARRIER_EVENTS))])
    if last is None:
        remaining = list(PROGRESS)
    elif last in PROGRESS:
        remaining = list(PROGRESS[PROGRESS.index(last) + 1 :])
    else:
        remaining = list(PROGRESS[PROGRESS.index(READY) + 1 :])  # unknown statuses follow READY
    steps: list[Step] = []
    exception = REQUESTED in remaining and rng.random() < config.data_exception_share
    cancel_after = None
    in_progress = [s for s in remaining if s != SHIPPED]
    if in_progress and rng.random() < config.cancel_share:
        cancel_after = rng.choice(in_progress)
    unknown = READY in remaining and rng.random() < config.unknown_status_share
    for status in remaining:
        if status == SHIPPED:
            steps += [_carrier_step(SHIPPED, i) for i in range(len(CARRIER_EVENTS))]
            break
        if status == PREPARED and exception:
            code, error, reason = rng.choice(_DATA_ERRORS)
            steps.append(_data_exception(code, error, reason))
            break
        steps.append(Step(status))
        if status == READY and unknown:
            steps.append(Step(rng.choice(UNKNOWN_STATUSES), reason="Held for review."))
        if status == cancel_after:
            steps.append(_canceled())
            break
    return _timed(rng, steps)


def _timed(rng: random.Random, steps: list[Step]) -> list[Step]:
    """Draw each step's delay around the typical duration of its stage."""
    for step in steps:
        key = "unknown" if step.status in UNKNOWN_STATUSES else step.status
        if step.status == SHIPPED and step.shipment_status != CARRIER_EVENTS[0][0]:
            key = "carrier"
        step.delay = _MEAN_DELAY[key] * rng.uniform(0.5, 1.5)
    return steps


def place(card: Card, steps: list[Step], now: float, speed: float) -> None:
    """Append steps to the card's events, spaced by their delays divided by speed."""
    at = now
    for step in steps:
        at += step.delay / speed
        card.events.append(Event(at=at, step=step))


def last_status(operations: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The furthest known status in seeded operations, and the last shipment status."""
    best, best_rank, shipment = None, -1, None
    for op in operations:
        details = op.get("details") or {}
        status = details.get("status")
        if status in ENDINGS:
            return status, None
        if status in PROGRESS and PROGRESS.index(status) >= best_rank:
            best, best_rank = status, PROGRESS.index(status)
            shipment = (details.get("shipment") or {}).get("status") or shipment
    return best, shipment


def iso(moment: float) -> str:
    """ISO 8601 with milliseconds and Z, like D1's examples."""
    text = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _carrier_step(status: str, index: int) -> Step:
    name, message = CARRIER_EVENTS[index]
    return Step(status, "SUCCESSFUL", shipment_status=name, shipment_message=message)


def _data_exception(code: str, error: str, reason: str) -> Step:
    return Step(DATA_EXCEPTION, "FAILED", error_code=code, error=error, reason=reason)


def _canceled() -> Step:
    # Top-level FAILED for a cancellation is an assumption (REFERENCE §2).
    return Step(CANCELED, "FAILED", reason="Order pulled by issuer (pull & change CANCEL).")

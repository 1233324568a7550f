"""What the pages say about an order's state, in plain language, for support agents.

One entry per situation an order can be in: every known D1 stage (REFERENCE §3), an
unrecognized status, a conflict and "no stage yet". Each says what the situation means, the next
step for the agent and what to tell the customer. All texts are translated (tracker/locale).
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from tracker.d1 import lifecycle
from tracker.models import CardOrder

# Tones drive the badge colour *and* its icon shape (static/tracker/app.css), never colour alone.
PROGRESS = "progress"
DONE = "done"
EXCEPTION = "exception"
ATTENTION = "attention"
NONE = "none"


@dataclass(frozen=True)
class Situation:
    label: Promise
    tone: str
    meaning: Promise
    next_step: Promise
    tell_customer: Promise


STAGES: dict[str, Situation] = {
    lifecycle.CARD_PROD_REQUESTED: Situation(
        _("Requested"),
        PROGRESS,
        _("D1 has accepted the card order and is about to check the card data."),
        _(
            "Nothing to do yet. If the order is late, or stays at this stage for more than a "
            "working day, ask a supervisor to check it with D1."
        ),
        _("Your card has been ordered and production is about to start."),
    ),
    lifecycle.DATA_PREPARED: Situation(
        _("Data prepared"),
        PROGRESS,
        _("D1 checked the card data and prepared it for the production site."),
        _("Nothing to do: the card goes to the production site next."),
        _("Your card details have been checked and your card will be made shortly."),
    ),
    lifecycle.CARD_PROD_READY: Situation(
        _("Queued for production"),
        PROGRESS,
        _("The card data reached the production site; the card waits to be personalized."),
        _("Nothing to do. If the order is late, ask a supervisor to check it with D1."),
        _("Your card is in the queue at the card production site."),
    ),
    lifecycle.CARD_PROD_ONGOING: Situation(
        _("In production"),
        PROGRESS,
        _("The card is being personalized now: printed, embossed and its chip loaded."),
        _("Nothing to do. If the order is late, ask a supervisor to check it with D1."),
        _("Your card is being made right now."),
    ),
    lifecycle.CARD_PROD_DONE: Situation(
        _("Produced"),
        PROGRESS,
        _("The card is made and is being prepared for posting."),
        _("Nothing to do: carrier and tracking number appear here once the card is posted."),
        _("Your card has been made and will be posted shortly."),
    ),
    lifecycle.CARD_SHIPPED: Situation(
        _("Shipped"),
        DONE,
        _(
            "The card has been handed to the carrier. Production is finished; carrier updates "
            "may follow."
        ),
        _(
            "Give the customer the carrier and the tracking number. If the carrier reports a "
            "problem with the parcel, follow the carrier's process."
        ),
        _(
            "Your card is on its way. You can follow the delivery with the carrier and the "
            "tracking number I am giving you now."
        ),
    ),
    lifecycle.CARD_RETURNED: Situation(
        _("Returned"),
        EXCEPTION,
        _("The carrier could not deliver the card and returned it; it will not be sent again."),
        _(
            "Check the customer's postal address with them, correct it in the issuing system and "
            "ask a supervisor to order a new card."
        ),
        _(
            "Your card could not be delivered and came back to us. Let's check your address so "
            "that we can send you a new card."
        ),
    ),
    lifecycle.DATA_EXCEPTION: Situation(
        _("Data rejected"),
        EXCEPTION,
        _("D1 could not process the card data, so the card was rejected and will not be made."),
        _(
            "Read the error and the reason below, correct the customer's data in the issuing "
            "system and place a new order. Ask a supervisor if the error is unclear."
        ),
        _(
            "There was a problem with the details for your card, so it was not made. We are "
            "correcting them and will order a new card for you."
        ),
    ),
    lifecycle.CARD_PROD_CANCELED: Situation(
        _("Canceled"),
        EXCEPTION,
        _("The card order was canceled before the card was made, for example by the issuer."),
        _(
            "Find out why it was canceled (the reason below, or the issuing system). If the "
            "customer still needs a card, place a new order."
        ),
        _(
            "This card order was canceled, so this card will not arrive. If you still need a "
            "card, we will order a new one for you."
        ),
    ),
    lifecycle.CARD_PROD_EXCEPTION: Situation(
        _("Production failed"),
        EXCEPTION,
        _("The production site had a problem personalizing the card."),
        _(
            "Pass the order to a supervisor with the error and the reason shown below; a new "
            "order is usually needed."
        ),
        _(
            "There was a problem making your card. We are looking into it and will make sure a "
            "new card is sent to you."
        ),
    ),
}

UNRECOGNIZED = Situation(
    _("Unrecognized status"),
    ATTENTION,
    _(
        "D1 reported a status Tracker does not know yet. The stage shown is the last one "
        "Tracker understood; the next known status from D1 replaces the unrecognized one."
    ),
    _(
        "Do not guess what it means. Tell a supervisor, who can check the order with D1, and "
        "promise the customer a call back."
    ),
    _("Your card is being processed. We are checking its exact status and will get back to you."),
)

CONFLICT = Situation(
    _("Conflicting results"),
    ATTENTION,
    _(
        "D1 reported two outcomes that cannot both be true, for example shipped and then "
        "rejected. Tracker keeps the first one and flags the order for manual review."
    ),
    _("Do not confirm either outcome. Pass the order to a supervisor for manual review."),
    _(
        "We are confirming the status of your card with the card production partner and will "
        "get back to you."
    ),
)

NO_STAGE = Situation(
    _("No stage yet"),
    NONE,
    _("Tracker knows this card but has not received a production status for it yet."),
    _("If the card was ordered more than a working day ago, ask a supervisor to check it with D1."),
    _("Your card order is registered; we are waiting for the first production update."),
)

# Carrier codes D1 sends (REFERENCE §5) and the names customers know them by.
CARRIER_NAMES = {
    "chronopost-france": "Chronopost France",
    "dhl": "DHL Express",
    "dhl-global-mail": "DHL eCommerce",
    "deutsch-post": "Deutsche Post Mail",
    "estafeta": "Estafeta",
    "fedex": "FedEx",
    "la-poste-colissimo": "La Poste Colissimo",
    "nacex": "NACEX",
    "spanish-seur": "Spanish Seur",
    "singapore-post": "Singapore Post",
    "spain-correos-es": "Correos de España",
    "ups": "UPS",
    "usps-iv-api": "USPS",
}


def stage_situation(status: str) -> Situation:
    """The texts of one details.status, known or not (for badges and timeline entries)."""
    if not status:
        return NO_STAGE
    return STAGES.get(status, UNRECOGNIZED)


def guidance(order: CardOrder) -> Situation:
    """The one situation that decides what the agent does next for this order."""
    if order.conflict:
        return CONFLICT
    # News D1 sent after a terminal stage does not change what the agent does.
    if order.unrecognized_status and not order.terminal:
        return UNRECOGNIZED
    return stage_situation(order.stage)


def carrier_name(code: str) -> str:
    return CARRIER_NAMES.get(code, code)


def tracking_link(url: str) -> str:
    """The carrier's tracking page when it is an https URL; otherwise nothing to link to."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host
        return ""
    return url if parts.scheme == "https" and parts.netloc else ""


@dataclass(frozen=True)
class Step:
    label: Promise
    state: str  # "done", "current" or "todo"


def steps(stage: str) -> list[Step]:
    """The production funnel with this stage marked; empty when the stage is off the funnel."""
    if stage and stage not in lifecycle.PROGRESS:
        return []
    position = lifecycle.PROGRESS.index(stage) if stage else -1
    last = len(lifecycle.PROGRESS) - 1
    return [
        Step(
            STAGES[status].label,
            "done"
            if i < position or i == position == last
            else "current"
            if i == position
            else "todo",
        )
        for i, status in enumerate(lifecycle.PROGRESS)
    ]

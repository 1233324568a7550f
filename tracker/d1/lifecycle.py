"""The card issuance lifecycle of D1 (REFERENCE §3): which `details.status` outranks which.

D1 sends no per-event timestamp, so events are ordered by lifecycle rank, never by arrival.
`details.status` is an open set: anything not listed here is *unrecognized* and has no rank.
"""

from django.conf import settings

CARD_PROD_REQUESTED = "CARD_PROD_REQUESTED"
DATA_PREPARED = "DATA_PREPARED"
DATA_EXCEPTION = "DATA_EXCEPTION"
CARD_PROD_READY = "CARD_PROD_READY"
CARD_PROD_ONGOING = "CARD_PROD_ONGOING"
CARD_PROD_DONE = "CARD_PROD_DONE"
CARD_SHIPPED = "CARD_SHIPPED"
CARD_PROD_CANCELED = "CARD_PROD_CANCELED"
CARD_PROD_EXCEPTION = "CARD_PROD_EXCEPTION"
CARD_RETURNED = "CARD_RETURNED"

TRACKED_OPERATIONS = frozenset({"PRODUCE", "STANDALONE_TRACKING"})

_RANKS = {
    CARD_PROD_REQUESTED: 10,
    DATA_PREPARED: 20,
    CARD_PROD_READY: 30,
    CARD_PROD_ONGOING: 40,
    CARD_PROD_DONE: 50,
    CARD_SHIPPED: 60,
    CARD_RETURNED: 70,
    DATA_EXCEPTION: 900,
    CARD_PROD_CANCELED: 900,
    CARD_PROD_EXCEPTION: 900,
}
# When CARD_PROD_EXCEPTION is configured as recoverable it sits between ONGOING and DONE:
# a later CARD_PROD_DONE supersedes it.
_RECOVERABLE_PROD_EXCEPTION_RANK = 45

SHIPPED_RANK = _RANKS[CARD_SHIPPED]
EXCEPTION_RANK = 900

# Statuses after which more events of the same status carry news (carrier updates).
_REPEATING = frozenset({CARD_SHIPPED, CARD_RETURNED})
_DELIVERED = frozenset({CARD_SHIPPED, CARD_RETURNED})

KNOWN = tuple(_RANKS)
# The production funnel, in order, for pages and charts.
PROGRESS = (
    CARD_PROD_REQUESTED,
    DATA_PREPARED,
    CARD_PROD_READY,
    CARD_PROD_ONGOING,
    CARD_PROD_DONE,
    CARD_SHIPPED,
)


def rank(status: str | None) -> int | None:
    """The lifecycle rank of a known status; None for an unrecognized one."""
    if status == CARD_PROD_EXCEPTION and not settings.D1_PROD_EXCEPTION_TERMINAL:
        return _RECOVERABLE_PROD_EXCEPTION_RANK
    return _RANKS.get(status or "")


def is_exception(status: str) -> bool:
    return rank(status) == EXCEPTION_RANK


def is_terminal(status: str) -> bool:
    """True once D1 will send no more production news (shipment updates may still follow)."""
    return status in _DELIVERED or is_exception(status)


def repeats(status: str) -> bool:
    """True for statuses that D1 sends again when only the shipment changed."""
    return status in _REPEATING


def conflicts(current: str, incoming: str) -> bool:
    """Two terminal outcomes that cannot both be true (REFERENCE §3, consumer rule 4)."""
    if not current or current == incoming:
        return False
    if is_exception(current):
        return is_exception(incoming) or incoming in _DELIVERED
    return current in _DELIVERED and is_exception(incoming)

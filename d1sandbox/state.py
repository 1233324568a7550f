"""Everything the sandbox remembers, in memory, behind one lock: cards, keys, tokens, faults,
counters and logs. Nothing here touches Tracker's database.

Two clocks: `now()` is sandbox time, which the control API can move forward to age cards; tokens
and assertions use the real clock, so moving sandbox time never breaks authentication.
"""

import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from d1sandbox import lifecycle
from d1sandbox.config import Config, Faults

_LOG_LIMIT = 200_000  # entries kept in each log; a benchmark run fits


@dataclass
class Token:
    issuer_id: str
    expires_at: float  # real clock


class SandboxState:
    """The sandbox's memory. Methods take the lock; callers reading several fields take it too."""

    def __init__(self, config: Config | None = None, faults: Faults | None = None) -> None:
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.config = config or Config()
        self.faults = faults or Faults()
        self.keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self.cards: dict[tuple[str, str], lifecycle.Card] = {}
        self.tokens: dict[str, Token] = {}
        self.counters: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=_LOG_LIMIT)
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=_LOG_LIMIT)
        self.skew = 0.0
        self._sequence = 0
        self.rng = random.Random(self.config.seed)
        self.fault_rng = random.Random(self.config.seed)

    def now(self) -> float:
        """Sandbox time (epoch seconds): the real clock plus whatever the control API added."""
        return time.time() + self.skew

    def reset(self) -> None:
        """Forget cards, tokens, faults, counters and logs; keep keys and config."""
        with self.lock:
            self.cards.clear()
            self.tokens.clear()
            self.counters.clear()
            self.requests.clear()
            self.deliveries.clear()
            self.faults = Faults()
            self.skew = 0.0
            self.rng = random.Random(self.config.seed)
            self.fault_rng = random.Random(self.config.seed)

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counters[name] += amount

    def log_request(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Log a request as it arrives; the caller fills in how it ended with update_request()."""
        with self.lock:
            self._sequence += 1
            logged = {"seq": self._sequence, **entry}
            self.requests.append(logged)
            return logged

    def update_request(self, logged: dict[str, Any], **changes: Any) -> None:
        with self.lock:
            logged.update(changes)

    def log_delivery(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self._sequence += 1
            self.deliveries.append({"seq": self._sequence, "at": time.time(), **entry})

    def sleep(self, seconds: float) -> None:
        """Wait, but wake up at once when the server stops (hangs must not outlive a test)."""
        if seconds > 0:
            self.stopping.wait(seconds)

    # --- tokens ---------------------------------------------------------------------------

    def issue_token(self, issuer_id: str) -> tuple[str, float]:
        value = secrets.token_urlsafe(32)
        with self.lock:
            ttl = self.config.token_ttl
            self.tokens[value] = Token(issuer_id, time.time() + ttl)
            self.counters["token.issued"] += 1
        return value, ttl

    def token_issuer(self, value: str) -> str | None:
        """The issuer a live token belongs to; None if unknown or expired."""
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.expires_at <= time.time():
                return None
            return token.issuer_id

    def expire_tokens(self) -> int:
        with self.lock:
            for token in self.tokens.values():
                token.expires_at = 0.0
            return len(self.tokens)

    # --- faults ---------------------------------------------------------------------------

    def take_fault(self, target: str) -> str | None:
        """The fault for this request: the next one-shot fault aimed here, else a random draw."""
        with self.lock:
            queue = self.faults.next
            if queue:
                aimed_at_token = queue[0].startswith("token:")
                if aimed_at_token == (target == "token"):
                    return queue.pop(0).removeprefix("token:")
            if target == "token":
                return None
            draw = self.fault_rng.random()
            for name, rate in self.faults.rates.items():
                if draw < rate:
                    return name
                draw -= rate
            return None

    def latency(self) -> float:
        with self.lock:
            jitter = self.fault_rng.uniform(0, self.faults.latency_jitter_ms)
            return (self.faults.latency_ms + jitter) / 1000

    # --- cards ----------------------------------------------------------------------------

    def order(self, issuer_id: str, card_id: str, issuer_request_id: str | None) -> str:
        """Order a card through D1's API; a retry with the same issuerRequestId is idempotent."""
        with self.lock:
            existing = self.cards.get((issuer_id, card_id))
            if existing and issuer_request_id and existing.issuer_request_id == issuer_request_id:
                return existing.operation_id
            now = self.now()
            card = lifecycle.new_card(
                issuer_id, card_id, now, self.rng, issuer_request_id=issuer_request_id
            )
            lifecycle.place(
                card, lifecycle.plan_after(self.rng, self.config, None), now, self.config.speed
            )
            self.cards[(issuer_id, card_id)] = card
            self.counters["orders"] += 1
            return card.operation_id

    def seed(self, spec: dict[str, Any]) -> lifecycle.Card:
        """A card from the control API: explicit operations, a stage, or a fresh order."""
        issuer_id, card_id = spec["issuerId"], spec["cardId"]
        operations = spec.get("operations") or []
        stage = spec.get("stage")
        with self.lock:
            now = self.now()
            card = lifecycle.new_card(
                issuer_id, card_id, now, self.rng, issuer_request_id=spec.get("issuerRequestId")
            )
            pushed = not spec.get("notify", False)
            if operations:
                lifecycle.adopt(card, operations)
                card.events = [lifecycle.Event(now, raw=op, pushed=pushed) for op in operations]
                last, shipment = lifecycle.last_status(operations)
            elif stage:
                history = lifecycle.history_to(stage)
                lifecycle.place(card, history, now, 1.0)
                for event in card.events:
                    event.pushed = pushed
                last, shipment = stage, lifecycle.CARRIER_EVENTS[0][0]
            else:
                last, shipment = None, None
            if spec.get("lifecycle", True):
                steps = lifecycle.plan_after(self.rng, self.config, last, shipment)
                lifecycle.place(card, steps, now, self.config.speed)
            self.cards[(issuer_id, card_id)] = card
            return card

    def card(self, issuer_id: str, card_id: str) -> lifecycle.Card | None:
        with self.lock:
            return self.cards.get((issuer_id, card_id))

    def current(self, issuer_id: str, card_id: str) -> dict[str, Any] | None:
        """The operation object productionStatus answers with; None for an unknown card."""
        with self.lock:
            card = self.cards.get((issuer_id, card_id))
            return None if card is None else card.current(self.now())

    def advance_card(self, card: lifecycle.Card, *, to: str | None, steps: int | None) -> int:
        """Make the card's next events visible now: up to status `to`, `steps` of them, or all."""
        with self.lock:
            now = self.now()
            upcoming = [i for i, event in enumerate(card.events) if event.at > now]
            if not upcoming:
                return 0
            if to is not None:
                matches = [i for i in upcoming if _status(card.events[i]) == to]
                if not matches:
                    raise LookupError(f"no upcoming {to} for this card")
                target = matches[0]
            elif steps is not None:
                target = upcoming[min(steps, len(upcoming)) - 1]
            else:
                target = upcoming[-1]
            shift = card.events[target].at - now
            for i in upcoming:
                card.events[i].at -= shift
            return target - upcoming[0] + 1

    def advance_clock(self, seconds: float) -> None:
        with self.lock:
            self.skew += seconds


def _status(event: lifecycle.Event) -> str | None:
    if event.step is not None:
        return event.step.status
    return ((event.raw or {}).get("details") or {}).get("status")

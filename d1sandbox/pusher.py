"""Notifications pushed to Tracker the way D1 does it (REFERENCE §4).

Each cycle collects the card events that became visible, and posts them in bulk
(`{"operations": [...]}`, up to notify_batch_size per POST) to
`{notify_url}/notifications/d1/v2/issuers/{issuerId}/cards` with a bearer token from Tracker's
client-credentials endpoint. Like D1 it delivers at least once and in no promised order: a share
of operations is sent twice, a share is held back or swapped behind a later one, and a share is
dropped (reconciliation has something to find). Failed POSTs are retried with capped exponential
backoff on any non-2xx except 400, which D1 never retries, and on timeouts.
"""

import logging
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from d1sandbox.state import SandboxState

logger = logging.getLogger(__name__)


@dataclass
class _Item:
    issuer_id: str
    card_id: str
    operation: dict[str, Any]
    duplicate: bool = False


@dataclass
class _Delivery:
    issuer_id: str
    items: list[_Item]
    attempts: int = 0
    next_at: float = field(default_factory=time.monotonic)
    last_error: str = ""


class Pusher:
    """Pushes the sandbox's card events to Tracker: in its own thread every notify_interval
    seconds, or when the control API asks for a flush."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._pending: list[_Delivery] = []
        self._later: list[_Item] = []  # held back or repeated: sent with the next cycle
        self._rng = random.Random(state.config.seed)
        self._http: httpx.Client | None = None
        self._token: tuple[str, float] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sandbox-pusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._http is not None:
            self._http.close()

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
            self._later.clear()
            self._token = None
            self._rng = random.Random(self.state.config.seed)

    def cycle(self) -> int:
        """Collect what became visible and attempt every delivery that is due; returns pending."""
        with self._lock:
            config = self.state.config
            if not config.notify_url:
                return 0
            self._queue(self._collect())
            for delivery in [d for d in self._pending if d.next_at <= time.monotonic()]:
                self._attempt(delivery)
            return len(self._pending) + len(self._later)

    def flush(self, timeout: float) -> dict[str, Any]:
        """Cycle until nothing is pending (retries included) or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        pending = self.cycle()
        while pending and time.monotonic() < deadline:
            with self._lock:
                soonest = min((d.next_at for d in self._pending), default=time.monotonic())
            wait = max(0.0, min(soonest - time.monotonic(), deadline - time.monotonic()))
            time.sleep(min(wait, 0.5))
            pending = self.cycle()
        return {"pending": pending}

    def _loop(self) -> None:
        while not self.state.stopping.is_set():
            interval = self.state.config.notify_interval
            if self.state.stopping.wait(interval if interval > 0 else 0.5):
                return
            if interval > 0:
                try:
                    self.cycle()
                except Exception:
                    # The pusher must outlive one bad cycle, like D1's does.
                    logger.exception("sandbox: notification cycle failed")

    def _collect(self) -> list[_Item]:
        """Visible events not pushed yet, marked pushed; drops and repeats decided here."""
        state, config = self.state, self.state.config
        carried, self._later = self._later, []
        fresh: list[_Item] = []
        with state.lock:
            now = state.now()
            for card in state.cards.values():
                for event in card.events:
                    if event.pushed or event.at > now:
                        continue
                    event.pushed = True
                    item = _Item(card.issuer_id, card.card_id, card.render(event))
                    if self._rng.random() < config.notify_drop_share:
                        state.counters["notify.dropped"] += 1
                        self._log(item, "dropped", 0)
                        continue
                    fresh.append(item)
                    if self._rng.random() < config.notify_duplicate_share:
                        self._later.append(_Item(**{**item.__dict__, "duplicate": True}))
        return self._shuffled(fresh) + carried

    def _shuffled(self, fresh: list[_Item]) -> list[_Item]:
        """Move a share of operations behind a later one of the same card, or to the next cycle."""
        share = self.state.config.notify_reorder_share
        queue, sent, moved = list(fresh), [], set()
        while queue:
            item = queue.pop(0)
            if id(item) not in moved and self._rng.random() < share:
                moved.add(id(item))
                key = (item.issuer_id, item.card_id)
                later = [
                    j for j, other in enumerate(queue) if (other.issuer_id, other.card_id) == key
                ]
                if later:
                    queue.insert(later[0] + 1, item)  # arrives after a later event of its card
                else:
                    self._later.append(item)
                continue
            sent.append(item)
        return sent

    def _queue(self, items: list[_Item]) -> None:
        size = self.state.config.notify_batch_size
        by_issuer: dict[str, list[_Item]] = {}
        for item in items:
            by_issuer.setdefault(item.issuer_id, []).append(item)
        for issuer_id, group in by_issuer.items():
            for start in range(0, len(group), size):
                self._pending.append(_Delivery(issuer_id, group[start : start + size]))

    def _attempt(self, delivery: _Delivery) -> None:
        config = self.state.config
        delivery.attempts += 1
        self.state.count("notify.posts")
        outcome = self._post(delivery)
        if outcome == "retry" and delivery.attempts < config.notify_max_attempts:
            backoff = min(
                config.notify_retry_cap, config.notify_retry_base * 2 ** (delivery.attempts - 1)
            )
            delivery.next_at = time.monotonic() + backoff
            return
        if outcome == "retry":
            outcome = "failed"
            logger.warning(
                "sandbox: gave up on a notification of %d operation(s) after %d attempts (%s)",
                len(delivery.items),
                delivery.attempts,
                delivery.last_error,
            )
        self._pending.remove(delivery)
        self.state.count(f"notify.{outcome}", len(delivery.items))
        for item in delivery.items:
            self._log(item, outcome, delivery.attempts)

    def _post(self, delivery: _Delivery) -> str:
        """One POST: "delivered", "rejected" (400, never retried) or "retry"."""
        config = self.state.config
        base = config.notify_url.rstrip("/")
        url = f"{base}/notifications/d1/v2/issuers/{delivery.issuer_id}/cards"
        body = {"operations": [item.operation for item in delivery.items]}
        try:
            headers = {"x-correlation-id": secrets.token_urlsafe(12)}
            if config.notify_auth == "bearer":
                headers["authorization"] = f"Bearer {self._bearer()}"
            response = self._client().post(url, json=body, headers=headers)
        except (httpx.HTTPError, _TokenError) as e:
            delivery.last_error = f"{type(e).__name__}: {e}"
            logger.debug("sandbox: notification POST failed: %s", delivery.last_error)
            return "retry"
        if response.is_success:
            return "delivered"
        if response.status_code == 400:
            return "rejected"
        if response.status_code == 401:
            self._token = None  # expired or revoked: fetch another before the retry
        delivery.last_error = f"answered {response.status_code}"
        logger.debug("sandbox: notification POST %s", delivery.last_error)
        return "retry"

    def _bearer(self) -> str:
        """Tracker's access token (client credentials, HTTP Basic), reused until near expiry."""
        if self._token and self._token[1] > time.monotonic():
            return self._token[0]
        config = self.state.config
        url = config.notify_token_url or f"{config.notify_url.rstrip('/')}/authz/d1/v1/oauth2/token"
        self.state.count("notify.token_requests")
        response = self._client().post(
            url,
            data={"grant_type": "client_credentials"},
            auth=(config.notify_client_id, config.notify_client_secret),
        )
        try:
            document = response.json() if response.is_success else {}
            token, expires_in = document["access_token"], float(document.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise _TokenError(f"token endpoint answered {response.status_code}") from None
        self._token = (token, time.monotonic() + max(1.0, expires_in - 30))
        return token

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.state.config.notify_timeout)
        return self._http

    def _log(self, item: _Item, outcome: str, attempts: int) -> None:
        details = item.operation.get("details") or {}
        self.state.log_delivery(
            {
                "issuerId": item.issuer_id,
                "cardId": item.card_id,
                "status": details.get("status"),
                "shipmentStatus": (details.get("shipment") or {}).get("status"),
                "outcome": outcome,
                "attempts": attempts,
                "duplicate": item.duplicate,
            }
        )


class _TokenError(Exception):
    """Tracker's token endpoint did not give a token; the delivery is retried later."""

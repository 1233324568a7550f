"""A Python client for the sandbox's control API (tests, the demo, the benchmarks)."""

from typing import Any

import httpx


class SandboxRemote:
    """Talks to a running sandbox's /_sandbox/ endpoints; every method raises on a non-2xx."""

    def __init__(self, url: str, *, timeout: float = 10.0, verify: Any = True) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, verify=verify)

    def close(self) -> None:
        self.http.close()

    def healthy(self) -> bool:
        try:
            return self.http.get("/_sandbox/health").is_success
        except httpx.HTTPError:
            return False

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change lifecycle or notification settings (d1sandbox.config.Config fields)."""
        return self._call("PATCH", "/_sandbox/config", json=changes)

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace every fault (d1sandbox.config.Faults fields); no argument clears them."""
        return self._call("PUT", "/_sandbox/faults", json=faults)

    def add_key(self, kid: str, public_key_pem: str) -> None:
        self._call("POST", "/_sandbox/keys", json={"kid": kid, "public_key": public_key_pem})

    def expire_tokens(self) -> int:
        return self._call("POST", "/_sandbox/tokens/expire")["expired"]

    def seed(self, *cards: dict[str, Any]) -> int:
        """Seed cards: each `{"issuerId", "cardId"}` plus optional "operations", "stage",
        "lifecycle" (default true), "issuerRequestId", "notify" (push the seeded history)."""
        return self._call("POST", "/_sandbox/cards", json={"cards": list(cards)})["seeded"]

    def card(self, issuer_id: str, card_id: str) -> dict[str, Any]:
        return self._call("GET", f"/_sandbox/cards/{issuer_id}/{card_id}")

    def advance_card(
        self, issuer_id: str, card_id: str, *, to: str | None = None, steps: int | None = None
    ) -> dict[str, Any]:
        body = {key: value for key, value in (("to", to), ("steps", steps)) if value is not None}
        return self._call("POST", f"/_sandbox/cards/{issuer_id}/{card_id}/advance", json=body)

    def advance_clock(self, seconds: float) -> None:
        self._call("POST", "/_sandbox/clock", json={"advance": seconds})

    def counters(self) -> dict[str, int]:
        return self._call("GET", "/_sandbox/counters")

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", "/_sandbox/requests", params={"since": since})["requests"]

    def notifications(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", "/_sandbox/notifications", params={"since": since})[
            "notifications"
        ]

    def flush(self, timeout: float = 5.0) -> dict[str, Any]:
        return self._call("POST", "/_sandbox/notifications/flush", json={"timeout": timeout})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

"""The sandbox's control API under /_sandbox/, for tests, the demo and the benchmarks.

It is not part of D1: no authentication, JSON in and out, snake_case setting names.
docs/sandbox.md lists the endpoints; d1sandbox/remote.py is a Python client for them.
"""

import re
from typing import TYPE_CHECKING, Any

from d1sandbox import auth, lifecycle
from d1sandbox.config import ConfigError, Faults, to_json, update
from d1sandbox.wire import BadRequest, Request, Response, json_response

if TYPE_CHECKING:
    from d1sandbox.server import Sandbox

_ISSUER_ID = re.compile(r"[A-Za-z0-9]{10}")
_CARD_ID = re.compile(r"[A-Za-z0-9_-]{1,48}")


def health(sandbox: "Sandbox", request: Request) -> Response:
    return json_response(200, {"ok": True, "cards": len(sandbox.state.cards)})


def reset(sandbox: "Sandbox", request: Request) -> Response:
    """Forget cards, tokens, faults, counters and logs (keys and config stay)."""
    sandbox.state.reset()
    sandbox.pusher.reset()
    return json_response(200, {"ok": True})


def config(sandbox: "Sandbox", request: Request) -> Response:
    """GET the lifecycle/notification settings; PATCH some of them."""
    if request.method != "GET":
        with sandbox.state.lock:
            _update(sandbox.state.config, request.json_object())
    return json_response(200, to_json(sandbox.state.config))


def faults(sandbox: "Sandbox", request: Request) -> Response:
    """GET the faults; PUT replaces them all (missing keys: no fault); PATCH changes some."""
    state = sandbox.state
    if request.method != "GET":
        with state.lock:
            target = Faults() if request.method == "PUT" else state.faults
            _update(target, request.json_object())
            state.faults = target
    return json_response(200, to_json(state.faults))


def keys(sandbox: "Sandbox", request: Request) -> Response:
    """POST `{"kid", "public_key"}`: accept assertions signed by this key (GET lists the kids)."""
    state = sandbox.state
    if request.method == "POST":
        body = request.json_object()
        kid, pem = body.get("kid"), body.get("public_key")
        if not isinstance(kid, str) or not kid or not isinstance(pem, str):
            raise BadRequest("kid and public_key (PEM) are required", "FIELD_INVALID_FORMAT")
        try:
            key = auth.public_key(pem)
        except ValueError as e:
            raise BadRequest(f"public_key: {e}", "FIELD_INVALID_VALUE") from None
        with state.lock:
            state.keys[kid] = key
    with state.lock:
        return json_response(200, {"kids": sorted(state.keys)})


def expire_tokens(sandbox: "Sandbox", request: Request) -> Response:
    return json_response(200, {"expired": sandbox.state.expire_tokens()})


def cards(sandbox: "Sandbox", request: Request) -> Response:
    """POST `{"cards": [spec, ...]}` (or one spec): seed cards. See docs/sandbox.md for the spec."""
    body = request.json_object()
    specs = body.get("cards", [body])
    if not isinstance(specs, list):
        raise BadRequest("cards must be a list")
    for index, spec in enumerate(specs):
        _check_spec(spec, f"cards[{index}]")
    for spec in specs:
        sandbox.state.seed(spec)
    return json_response(201, {"seeded": len(specs)})


def card(sandbox: "Sandbox", request: Request, issuer_id: str, card_id: str) -> Response:
    """GET one card: its current operation and its whole plan."""
    found = sandbox.state.card(issuer_id, card_id)
    if found is None:
        return json_response(404, {"error": "no such card"})
    return json_response(200, _card_json(sandbox, found))


def advance_card(sandbox: "Sandbox", request: Request, issuer_id: str, card_id: str) -> Response:
    """POST `{"to": STATUS}`, `{"steps": n}` or `{}` (everything): make events visible now."""
    found = sandbox.state.card(issuer_id, card_id)
    if found is None:
        return json_response(404, {"error": "no such card"})
    body = request.json_object()
    to, steps = body.get("to"), body.get("steps")
    if (to is not None and not isinstance(to, str)) or (
        steps is not None and (not isinstance(steps, int) or steps < 1)
    ):
        raise BadRequest("to must be a status, steps a positive whole number")
    try:
        advanced = sandbox.state.advance_card(found, to=to, steps=steps)
    except LookupError as e:
        return json_response(409, {"error": str(e)})
    return json_response(200, {"advanced": advanced, **_card_json(sandbox, found)})


def clock(sandbox: "Sandbox", request: Request) -> Response:
    """POST `{"advance": seconds}`: move sandbox time forward (cards age; tokens do not)."""
    seconds = request.json_object().get("advance", 0)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise BadRequest("advance must be a number of seconds, at least 0")
    sandbox.state.advance_clock(float(seconds))
    return json_response(200, {"now": lifecycle.iso(sandbox.state.now())})


def counters(sandbox: "Sandbox", request: Request) -> Response:
    with sandbox.state.lock:
        return json_response(200, dict(sandbox.state.counters))


def requests(sandbox: "Sandbox", request: Request) -> Response:
    """GET `?since=SEQ`: the D1 API requests received, oldest first."""
    return json_response(200, {"requests": _since(sandbox, sandbox.state.requests, request)})


def notifications(sandbox: "Sandbox", request: Request) -> Response:
    """GET `?since=SEQ`: each pushed (or dropped) operation with its outcome, oldest first."""
    return json_response(200, {"notifications": _since(sandbox, sandbox.state.deliveries, request)})


def flush(sandbox: "Sandbox", request: Request) -> Response:
    """POST `{"timeout": seconds}`: push what is due now and wait out the retries."""
    timeout = request.json_object().get("timeout", 5)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
        raise BadRequest("timeout must be a number of seconds")
    return json_response(200, sandbox.pusher.flush(min(float(timeout), 60.0)))


def _update(target: Any, changes: dict[str, Any]) -> None:
    try:
        update(target, changes)
    except ConfigError as e:
        raise BadRequest(str(e), "FIELD_INVALID_VALUE") from None


def _check_spec(spec: Any, where: str) -> None:
    if not isinstance(spec, dict):
        raise BadRequest(f"{where}: must be an object")
    if not _ISSUER_ID.fullmatch(str(spec.get("issuerId", ""))):
        raise BadRequest(f"{where}.issuerId: must be 10 letters or digits")
    if not _CARD_ID.fullmatch(str(spec.get("cardId", ""))):
        raise BadRequest(f"{where}.cardId: must be 1-48 of A-Z a-z 0-9 _ -")
    operations = spec.get("operations")
    if operations is not None and (
        not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations)
    ):
        raise BadRequest(f"{where}.operations: must be a list of operation objects")
    for key in ("stage", "issuerRequestId"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise BadRequest(f"{where}.{key}: must be a string")


def _card_json(sandbox: "Sandbox", card: lifecycle.Card) -> dict[str, Any]:
    state = sandbox.state
    with state.lock:
        now = state.now()
        events = []
        for event in card.events:
            operation = card.render(event)
            details = operation.get("details") or {}
            events.append(
                {
                    "at": lifecycle.iso(event.at),
                    "status": details.get("status"),
                    "shipmentStatus": (details.get("shipment") or {}).get("status"),
                    "visible": event.at <= now,
                    "pushed": event.pushed,
                }
            )
        return {
            "issuerId": card.issuer_id,
            "cardId": card.card_id,
            "operationId": card.operation_id,
            "current": card.current(now),
            "events": events,
        }


def _since(sandbox: "Sandbox", log: Any, request: Request) -> list[dict[str, Any]]:
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        raise BadRequest("since must be a whole number") from None
    with sandbox.state.lock:
        return [entry for entry in log if entry["seq"] > since]

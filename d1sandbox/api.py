"""What D1 serves, as the sandbox plays it: the token endpoint, productionStatus and ordering.

Every D1 API request passes the same gate, in this order: the x-correlation-id must match D1's
pattern, the configured latency is added, an injected fault may answer instead, and the bearer
token must be live and belong to the issuer in the path.
"""

import re

from d1sandbox import auth
from d1sandbox.state import SandboxState
from d1sandbox.wire import Request, Response, d1_error, json_response

_CORRELATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ISSUER_ID = re.compile(r"[A-Za-z0-9]{10}")
_CARD_ID = re.compile(r"[A-Za-z0-9_-]{1,48}")
_ERROR_CODES = {
    400: "FIELD_INVALID_VALUE",
    401: "AUTHORIZER_UNAUTHORIZED",
    403: "AUTHORIZER_FORBIDDEN",
    404: "NOT_FOUND",
    429: "TOO_MANY_REQUESTS",
}
# Valid JSON up to the point where the connection "broke".
_MALFORMED = b'{"operations": [{"operationId": "9f3b6c2e-5d1a", "operation": "PRO'


def token(state: SandboxState, request: Request) -> Response:
    """POST /authz/v1/oauth2/token: a JWT-bearer grant for a 15-minute access token."""
    state.count("token.requests")
    fault = request.fault = state.take_fault("token")
    if fault:
        injected = _fault(state, fault)
        if injected is not None:
            return injected
        if fault == "malformed":
            return Response(200, b'{"access_token": "', {"content-type": "application/json"})
    try:
        with state.lock:
            keys = dict(state.keys)
        issuer_id = auth.verify(request.form_or_json(), keys)
    except auth.Refused as e:
        state.count("token.refused")
        return d1_error(e.status, e.error_code, e.error)
    value, ttl = state.issue_token(issuer_id)
    expires_in = int(ttl) if float(ttl).is_integer() else ttl
    return json_response(
        200,
        {"access_token": value, "token_type": "Bearer", "expires_in": expires_in, "scope": "cards"},
    )


def production_status(
    state: SandboxState, request: Request, issuer_id: str, card_id: str
) -> Response:
    """GET …/productionStatus: the card's current operation object (REFERENCE §6)."""
    state.count("status.requests")
    refused, fault = _gate(state, request, issuer_id, card_id)
    if refused is not None:
        return refused
    operation = state.current(issuer_id, card_id)
    if operation is None:
        return d1_error(404, "CARD_NOT_FOUND", "Card not found")
    if fault == "malformed":
        return Response(200, _MALFORMED, {"content-type": "application/json"})
    return json_response(200, {"operations": [operation]})


def order_card(state: SandboxState, request: Request, issuer_id: str, card_id: str) -> Response:
    """POST …/physicalCards/{cardId}/operations:production: 202 with the new operationId."""
    state.count("order.requests")
    refused, _ = _gate(state, request, issuer_id, card_id)
    if refused is not None:
        return refused
    body = request.json_object()
    issuer_request_id = body.get("issuerRequestId")
    if issuer_request_id is not None and not isinstance(issuer_request_id, str):
        return d1_error(400, "FIELD_INVALID_FORMAT", "issuerRequestId must be a string")
    operation_id = state.order(issuer_id, card_id, issuer_request_id)
    return json_response(202, {"operationId": operation_id})


def _gate(
    state: SandboxState, request: Request, issuer_id: str, card_id: str
) -> tuple[Response | None, str | None]:
    """Refuse the request as D1 would, or let it through with the fault it should suffer."""
    correlation_id = request.headers.get("x-correlation-id")
    if correlation_id is not None and not _CORRELATION_ID.fullmatch(correlation_id):
        return d1_error(400, "FIELD_INVALID_FORMAT", "x-correlation-id is malformed"), None
    if not _ISSUER_ID.fullmatch(issuer_id) or not _CARD_ID.fullmatch(card_id):
        return d1_error(400, "FIELD_INVALID_FORMAT", "issuerId or cardId is malformed"), None
    state.sleep(state.latency())
    fault = request.fault = state.take_fault("api")
    if fault:
        injected = _fault(state, fault)
        if injected is not None:
            return injected, fault
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return d1_error(401, "AUTHORIZER_UNAUTHORIZED", "Access token missing"), fault
    owner = state.token_issuer(value.strip())
    if owner is None:
        return d1_error(401, "AUTHORIZER_UNAUTHORIZED", "Access token expired"), fault
    if owner != issuer_id:
        return d1_error(403, "AUTHORIZER_FORBIDDEN", "Token not valid for this issuer"), fault
    return None, fault


def _fault(state: SandboxState, fault: str) -> Response | None:
    """The answer an injected fault gives; None when the request goes on (hang, malformed)."""
    state.count(f"fault.{fault}")
    if fault == "hang":
        # Outlast the client's timeout, then answer normally to a client that has gone.
        state.sleep(state.faults.hang_seconds)
        return None
    if fault == "reset":
        return Response(0, reset=True)
    if fault == "malformed":
        return None
    status = int(fault)
    headers = {"retry-after": state.faults.retry_after} if status == 429 else {}
    code = _ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "FIELD_INVALID_VALUE")
    return d1_error(status, code, "Injected by the D1 sandbox", **headers)

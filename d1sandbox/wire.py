"""The sandbox's request and response values, shared by the D1 API and the control API."""

import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl


class BadRequest(Exception):
    """The request cannot be served; answered 400 with D1's error body."""

    def __init__(self, error: str, error_code: str = "PARSING_ERROR") -> None:
        super().__init__(error)
        self.error_code = error_code


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    client_cert: str | None = None  # subject of a verified TLS client certificate
    fault: str | None = None  # the fault injected into this request, for the log

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("body is not JSON") from None

    def json_object(self) -> dict[str, Any]:
        document = self.json() if self.body else {}
        if not isinstance(document, dict):
            raise BadRequest("body must be a JSON object")
        return document

    def form_or_json(self) -> dict[str, Any]:
        """An OAuth2 token request body: form-encoded, or JSON (D1 accepts both)."""
        if "json" in (self.headers.get("content-type") or ""):
            return self.json_object()
        try:
            return dict(parse_qsl(self.body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise BadRequest("body is not form-encoded") from None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # close the connection without answering


def json_response(status: int, document: Any, **headers: str) -> Response:
    body = json.dumps(document, ensure_ascii=False).encode()
    return Response(status, body, {"content-type": "application/json", **headers})


def d1_error(status: int, error_code: str, error: str, **headers: str) -> Response:
    """D1's inbound error body (REFERENCE §6): `{"errorCode": ..., "error": ...}`."""
    return json_response(status, {"errorCode": error_code, "error": error}, **headers)

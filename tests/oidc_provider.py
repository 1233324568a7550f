"""A small OpenID Connect provider for the single sign-on tests, over real HTTP.

It implements the authorization-code flow with PKCE (S256): /authorize answers with a redirect to
the client's callback carrying a code, /token exchanges the code (client secret and verifier
checked) for an RS256-signed id_token, /userinfo returns the claims, /jwks publishes the key.
"""

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "test-idp-key-1"


@dataclass
class Provider:
    client_id: str
    client_secret: str
    # The next person to sign in: their claims (the test sets them).
    claims: dict[str, Any] = field(default_factory=dict)
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Who asked what (for the tests to check the flow really went through here).
    log: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    audience: str | None = None  # another client's id, to forge a token meant for it

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._get(self)

            def do_POST(self) -> None:
                provider._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # --- Endpoints -----------------------------------------------------------------------------

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        self.log.append(f"GET {parts.path}")
        if parts.path == "/authorize":
            if query.get("client_id") != self.client_id or query.get("response_type") != "code":
                return self._json(handler, 400, {"error": "invalid_request"})
            code = secrets.token_urlsafe(16)
            self.codes[code] = {**query, "claims": dict(self.claims)}
            location = (
                query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
            )
            handler.send_response(302)
            handler.send_header("Location", location)
            handler.end_headers()
        elif parts.path == "/jwks":
            numbers = self.key.public_key().public_numbers()
            jwk = {
                "kty": "RSA",
                "kid": KID,
                "alg": "RS256",
                "use": "sig",
                "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": _b64(numbers.e.to_bytes(3, "big")),
            }
            self._json(handler, 200, {"keys": [jwk]})
        elif parts.path == "/userinfo":
            token = handler.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in self.tokens:
                return self._json(handler, 401, {"error": "invalid_token"})
            self._json(handler, 200, self.tokens[token])
        else:
            self._json(handler, 404, {"error": "not_found"})

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        self.log.append(f"POST {urlsplit(handler.path).path}")
        if urlsplit(handler.path).path != "/token":
            return self._json(handler, 404, {"error": "not_found"})
        grant = self.codes.pop(form.get("code", ""), None)
        if (
            grant is None
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
            or form.get("redirect_uri") != grant["redirect_uri"]
            or _challenge(form.get("code_verifier", "")) != grant.get("code_challenge")
        ):
            return self._json(handler, 400, {"error": "invalid_grant"})
        now = int(time.time())
        claims = grant["claims"]
        id_token = jwt.encode(
            {
                "iss": self.url,
                "aud": self.audience or self.client_id,
                "iat": now,
                "exp": now + 300,
                "nonce": grant.get("nonce"),
                **claims,
            },
            self.key,
            algorithm="RS256",
            headers={"kid": KID},
        )
        access_token = secrets.token_urlsafe(16)
        self.tokens[access_token] = claims
        self._json(
            handler,
            200,
            {"access_token": access_token, "id_token": id_token, "token_type": "Bearer"},
        )

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, status: int, document: dict) -> None:
        body = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())

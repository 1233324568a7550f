"""The sandbox's HTTP server: stdlib ThreadingHTTPServer, one thread per connection.

`Sandbox(...).start(port=0)` runs it in-process on an ephemeral port (tests); `manage.py
d1_sandbox` runs it as its own process (the demo). With an ssl.SSLContext it speaks TLS and, when
the context requires one, records the subject of the client certificate it verified.
"""

import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from d1sandbox import api, auth, control
from d1sandbox.config import Config, Faults
from d1sandbox.pusher import Pusher
from d1sandbox.state import SandboxState
from d1sandbox.wire import BadRequest, Request, Response, d1_error, json_response

logger = logging.getLogger(__name__)

BASE_PATH = "/banking/v1"
TOKEN_PATH = "/authz/v1/oauth2/token"
_CARD = r"issuers/(?P<issuer_id>[^/]+)/physicalcards/(?P<card_id>[^/]+)"


class Sandbox:
    """The sandbox's state and pusher, and once started its HTTP server."""

    def __init__(
        self,
        config: Config | None = None,
        faults: Faults | None = None,
        keys: dict[str, str] | None = None,
    ) -> None:
        self.state = SandboxState(config, faults)
        for kid, pem in (keys or {}).items():
            self.state.keys[kid] = auth.public_key(pem)
        self.pusher = Pusher(self.state)
        self._httpd: _Server | None = None
        self._tls = False

    def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> "Sandbox":
        """Serve in background threads; port 0 picks a free port (see `url`)."""
        httpd = _Server((host, port), _Handler)
        httpd.sandbox = self
        if ssl_context is not None:
            # The handshake then happens in the connection's own thread, not in the accept loop.
            httpd.socket = ssl_context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self._tls = True
        self._httpd = httpd
        threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="d1-sandbox",
            daemon=True,
        ).start()
        self.pusher.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()  # wakes hanging requests and the pusher
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.pusher.stop()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the sandbox first"
        host, port = self._httpd.server_address[:2]
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    @property
    def base_url(self) -> str:
        """What D1_BASE_URL should be to reach this sandbox."""
        return self.url + BASE_PATH

    @property
    def token_url(self) -> str:
        """What D1_TOKEN_URL should be to reach this sandbox."""
        return self.url + TOKEN_PATH


@dataclass(frozen=True)
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Callable[..., Response]
    d1: bool  # a D1 API route: logged in the request log


def _d1(handler: Callable[..., Response]) -> Callable[..., Response]:
    return lambda sandbox, request, **params: handler(sandbox.state, request, **params)


def _route(methods: str, path: str, handler: Callable[..., Response], d1: bool = False) -> _Route:
    # The guide spells D1's paths in lower case, the API reference in camelCase: accept both.
    flags = re.IGNORECASE if d1 else 0
    return _Route(frozenset(methods.split()), re.compile(path, flags), handler, d1)


_ROUTES = (
    _route("POST", re.escape(TOKEN_PATH), _d1(api.token), d1=True),
    _route("GET", f"{BASE_PATH}/{_CARD}/productionstatus", _d1(api.production_status), d1=True),
    _route("POST", f"{BASE_PATH}/{_CARD}/operations:production", _d1(api.order_card), d1=True),
    _route("GET", "/_sandbox/health", control.health),
    _route("POST", "/_sandbox/reset", control.reset),
    _route("GET PATCH", "/_sandbox/config", control.config),
    _route("GET PUT PATCH", "/_sandbox/faults", control.faults),
    _route("GET POST", "/_sandbox/keys", control.keys),
    _route("POST", "/_sandbox/tokens/expire", control.expire_tokens),
    _route("POST", "/_sandbox/cards", control.cards),
    _route("GET", "/_sandbox/cards/(?P<issuer_id>[^/]+)/(?P<card_id>[^/]+)", control.card),
    _route(
        "POST",
        "/_sandbox/cards/(?P<issuer_id>[^/]+)/(?P<card_id>[^/]+)/advance",
        control.advance_card,
    ),
    _route("POST", "/_sandbox/clock", control.clock),
    _route("GET", "/_sandbox/counters", control.counters),
    _route("GET", "/_sandbox/requests", control.requests),
    _route("GET", "/_sandbox/notifications", control.notifications),
    _route("POST", "/_sandbox/notifications/flush", control.flush),
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: Sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, failed TLS handshakes) are routine here.
        logger.debug("sandbox: connection from %s ended badly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    timeout = 30  # an idle keep-alive connection gives its thread back after this
    server: _Server
    client_cert: str | None = None

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and delayed
        # ACKs add 40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()
            certificate = self.connection.getpeercert()
            if certificate:
                self.client_cert = ", ".join(
                    f"{name}={value}" for rdn in certificate["subject"] for name, value in rdn
                )

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox: " + format, *args)

    def _serve(self) -> None:
        started, wall = time.monotonic(), time.time()
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        length = int(self.headers.get("content-length") or 0)
        request = Request(
            method=self.command,
            path=path,
            query=dict(parse_qsl(parts.query)),
            headers=self.headers,
            body=self.rfile.read(length) if length else b"",
            client_cert=self.client_cert,
        )
        route, params = _match(path)
        state = self.server.sandbox.state
        logged = None
        if route is not None and route.d1:
            # Logged on arrival, so a request that hangs shows up before it ends.
            logged = state.log_request(
                {
                    "at": wall,
                    "method": self.command,
                    "path": path,
                    "status": None,  # stays None when the sandbox never answers
                    "correlationId": self.headers.get("x-correlation-id"),
                    "fault": None,
                    "ms": None,
                    "clientCert": self.client_cert,
                }
            )
        if route is None:
            response = json_response(404, {"error": f"no route for {path}"})
        elif self.command not in route.methods:
            response = json_response(405, {"error": f"{self.command} not allowed on {path}"})
        else:
            response = self._call(route, request, params)
        if logged is not None:
            state.update_request(
                logged,
                status=None if response.reset else response.status,
                fault=request.fault,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        self._write(response)

    def _call(self, route: _Route, request: Request, params: dict[str, str]) -> Response:
        try:
            return route.handler(self.server.sandbox, request, **params)
        except BadRequest as e:
            return d1_error(400, e.error_code, str(e))
        except Exception:
            logger.exception("sandbox: %s %s failed", request.method, request.path)
            return d1_error(500, "INTERNAL_ERROR", "The D1 sandbox failed; see its log")

    def _write(self, response: Response) -> None:
        if response.reset:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (hang faults)


def _match(path: str) -> tuple[_Route | None, dict[str, str]]:
    for route in _ROUTES:
        found = route.pattern.fullmatch(path)
        if found:
            return route, found.groupdict()
    return None, {}

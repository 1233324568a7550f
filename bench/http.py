"""A minimal HTTP/1.0 client over plain sockets: cheap enough to leave the cores to the server.

HTTP/1.0 is what nginx speaks to its upstream by default, and gunicorn's sync workers close the
connection after every answer anyway: one connection per request, the body read to EOF (no
chunked encoding to undo). Standard library only, so the load generator starts fast.
"""

import base64
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

# Behind the TLS-terminating proxy (docs/deploy.md), as DJANGO_DEBUG=0 expects.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    received: int  # body bytes, also when the body was not kept
    cookies: dict[str, str] = field(default_factory=dict)


def encode(
    method: str,
    path: str,
    *,
    host: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """The request's bytes, built once (the load generator prepares them before the clock)."""
    lines = [f"{method} {path} HTTP/1.0", f"Host: {host}"]
    merged = {**PROXY_HEADERS, **(headers or {})}
    if body or method in ("POST", "PUT", "PATCH"):
        merged["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in merged.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def send(
    address: tuple[str, int], raw: bytes, *, timeout: float = 60.0, keep_body: bool = True
) -> Answer:
    """Send prepared request bytes and read the whole answer."""
    started = time.perf_counter()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the answer's headers")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        parts = [rest] if keep_body else []
        received = len(rest)
        while chunk := sock.recv(262144):
            received += len(chunk)
            if keep_body:
                parts.append(chunk)
    status, headers, cookies = _parse_head(head)
    return Answer(
        status, headers, b"".join(parts), time.perf_counter() - started, received, cookies
    )


def request(
    address: tuple[str, int],
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 60.0,
) -> Answer:
    raw = encode(method, path, host=f"{address[0]}:{address[1]}", headers=headers, body=body)
    return send(address, raw, timeout=timeout)


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def cookie_header(cookies: Mapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def query(value: str) -> str:
    return quote(value, safe="")


def _parse_head(head: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "set-cookie":
            pair = value.split(";", 1)[0]
            cookie, _, cookie_value = pair.partition("=")
            cookies[cookie.strip()] = cookie_value.strip()
        headers[name] = value
    return status, headers, cookies

"""What every sandbox server shares: chaos configuration and injection, a token-bucket quota,
and the loopback HTTP server (keep-alive, connection tracking, TCP resets) run on a thread.

A sandbox object implements ``handle(handler)``; the server calls it from the connection's
thread with a ``SandboxHandler`` that can write a response or reset the connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import socket
import struct
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

logger = logging.getLogger("aiq_sync.sandbox")


# --------------------------------------------------------------------------------------------
# Chaos configuration
# --------------------------------------------------------------------------------------------


class Fault(BaseModel):
    """When to inject one kind of fault.

    ``first``: the first N eligible requests always get it (deterministic tests);
    ``probability``: afterwards, each eligible request gets it with this chance (seeded);
    ``burst``: once triggered, the next ``burst - 1`` eligible requests get it too;
    ``paths``: only requests whose API path starts with one of these (e.g. ``"v2/orders"``).
    """

    model_config = ConfigDict(frozen=True)

    probability: float = Field(0.0, ge=0.0, le=1.0)
    first: int = Field(0, ge=0)
    burst: int = Field(1, ge=1)
    paths: tuple[str, ...] = ()


class Chaos(BaseModel):
    """Fault injection shared by every sandbox; a sandbox subclasses it to add its own faults
    (any field typed ``Fault`` is one). A bare float is a probability, a bare int a ``first``
    count, a bool ``first=1`` or nothing."""

    model_config = ConfigDict(frozen=True)

    server_error: Fault = Fault()
    server_error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    throttle_without_headers: Fault = Fault()
    slow: Fault = Fault()
    slow_seconds: float = 2.0
    truncated_json: Fault = Fault()
    html_200: Fault = Fault()
    connection_reset: Fault = Fault()

    @field_validator("*", mode="before")
    @classmethod
    def _shorthand(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None or field.annotation is not Fault:
            return v
        if isinstance(v, bool):
            return Fault(first=1) if v else Fault()
        if isinstance(v, int):
            return Fault(first=v)
        if isinstance(v, float):
            return Fault(probability=v)
        return v

    @classmethod
    def fault_names(cls) -> tuple[str, ...]:
        return tuple(n for n, f in cls.model_fields.items() if f.annotation is Fault)

    @classmethod
    def parse(cls, text: str) -> Self:
        """``"server_error=0.05,truncated_json=2,slow_seconds=1.5"`` (for the CLI)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, raw = part.partition("=")
            values[key.strip()] = float(raw) if "." in raw else int(raw)
        return cls(**values)


class ChaosState:
    """Decides, request by request and reproducibly from the seed, which fault to inject."""

    def __init__(self, chaos: Chaos, seed: int) -> None:
        self.chaos = chaos
        self.rng = random.Random(f"{seed}:chaos")
        self.lock = threading.Lock()
        names = type(chaos).fault_names()
        self.seen = dict.fromkeys(names, 0)
        self.burst_left = dict.fromkeys(names, 0)
        self.injected = dict.fromkeys(names, 0)

    def hit(self, name: str, api_path: str) -> bool:
        fault: Fault = getattr(self.chaos, name)
        if not (fault.probability or fault.first):
            return False
        if fault.paths and not any(api_path.startswith(p) for p in fault.paths):
            return False
        with self.lock:
            self.seen[name] += 1
            if self.burst_left[name] > 0:
                self.burst_left[name] -= 1
                hit = True
            elif self.seen[name] <= fault.first:
                hit = True
            else:
                hit = fault.probability > 0 and self.rng.random() < fault.probability
                if hit:
                    self.burst_left[name] = fault.burst - 1
            if hit:
                self.injected[name] += 1
            return hit


# --------------------------------------------------------------------------------------------
# Quota
# --------------------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` requests per second with bursts up to ``burst``: the shape of per-key limits
    of POS APIs that send no quota headers (Treez: 10 requests/s). ``take()`` answers whether a
    request may pass and, if not, how many seconds until one may."""

    def __init__(self, rate: float, burst: int, *, clock: Any = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> tuple[bool, float]:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True, 0.0
            return False, (1 - self._tokens) / self.rate

    @staticmethod
    def retry_after(seconds: float, time_scale: float = 1.0) -> str:
        """Whole seconds like live APIs; fractions when the sandbox runs time-scaled."""
        return str(math.ceil(seconds)) if time_scale == 1 else f"{max(seconds, 0.001):.3f}"


class SandboxClock:
    """A sandbox's "now" in epoch seconds: fixed when given (deterministic data for tests and
    the demo), else running like the wall clock; ``advance`` moves it ("the next night")."""

    def __init__(self, now: datetime | None) -> None:
        self.fixed = now is not None
        base = now or datetime.now(UTC)
        if base.tzinfo is None:
            base = base.replace(tzinfo=UTC)
        self.start_ts = int(base.timestamp())
        self._mono0 = time.monotonic()

    def now(self) -> int:
        if self.fixed:
            return self.start_ts
        return self.start_ts + int(time.monotonic() - self._mono0)

    def advance(self, seconds: int) -> int:
        self.start_ts += seconds
        return self.now()


# --------------------------------------------------------------------------------------------
# Loopback admin routes (benchmarks drive a sandbox running in another process)
# --------------------------------------------------------------------------------------------

ADMIN_PREFIX = "/_admin/"


class AdminApp(Protocol):
    """What a sandbox exposes under ``/_admin/``: no vendor has these routes, they are never
    counted as requests and never throttled."""

    def counters(self) -> dict[str, Any]: ...
    def reset_counters(self) -> None: ...
    def advance_clock(self, seconds: int) -> int: ...
    def modify_share(self, share: float) -> dict[str, int]: ...
    def holdings(self) -> dict[str, int]: ...


def handle_admin(app: AdminApp, handler: SandboxHandler) -> bool:
    """Serve ``/_admin/...`` if that is what was asked; False for any other path.

    GET counters, GET holdings (orders, items, customers the sandbox serves),
    POST reset_counters, POST advance?seconds=N (fixed clock only moves here),
    POST modify?share=0.01 (that share of orders and customers modified "now")."""
    path, _, query = handler.path.partition("?")
    if not path.startswith(ADMIN_PREFIX):
        return False
    name = path[len(ADMIN_PREFIX) :]
    params = dict(parse_qsl(query))
    body: Any
    if handler.command == "GET" and name == "counters":
        body = app.counters()
    elif handler.command == "GET" and name == "holdings":
        body = app.holdings()
    elif handler.command == "POST" and name == "reset_counters":
        app.reset_counters()
        body = {}
    elif handler.command == "POST" and name == "advance":
        body = {"now": app.advance_clock(int(params.get("seconds", "86400")))}
    elif handler.command == "POST" and name == "modify":
        body = app.modify_share(float(params.get("share", "0.01")))
    else:
        handler.write_response(404, b'{"status":404}', "application/json", {})
        return True
    handler.write_response(200, json.dumps(body).encode(), "application/json", {})
    return True


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class SandboxApp(Protocol):
    def handle(self, handler: SandboxHandler) -> None: ...


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sandbox: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        # Idle keep-alive connections would otherwise hold their threads until the client goes.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like on the real API
    server_version = "nginx"
    sys_version = ""
    timeout = 60
    server: SandboxServer
    body: bytes = b""
    error_body: ClassVar[bytes] = b'{"status":500,"title":"Internal sandbox error"}'

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this Nagle adds ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        try:
            self.server.sandbox.handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug in the fake must not hang the client
            logger.exception("sandbox handler failed for %s", self.path.split("?", 1)[0])
            self.write_response(500, self.error_body, "application/json", {})

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch

    def write_response(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and status != 204:
            self.wfile.write(body)

    def reset_connection(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), like a load balancer dropping the connection."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


class ServerThread:
    """Serves one sandbox on loopback from a daemon thread; ``start()`` returns the port."""

    def __init__(self, app: SandboxApp, host: str, port: int, name: str) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self.stopping = threading.Event()
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        if self._server is not None:
            return self.port
        server = SandboxServer((self.host, self.port), SandboxHandler)
        server.sandbox = self.app
        self._server = server
        self.port = server.server_address[1]
        self.stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

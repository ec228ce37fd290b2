"""The one HTTP layer every API connector uses: retries, pacing, stats, bounded concurrency.

Concurrency model: a thread pool over one synchronous ``httpx.Client``. Connectors and Dagster
assets are synchronous code; ``httpx.Client`` is safe to share between threads (it owns a
connection pool), and the fan-out we need (tens of requests in flight, never thousands) is well
within what threads handle. An asyncio variant would force every caller to run an event loop
inside Dagster ops for no throughput gain at these request rates, so pacing here is thread-safe
(locks) rather than task-safe.

Secrets: auth headers are passed in by the connector and only ever handed to httpx. They are never
logged, never put into exceptions or stats, and any echo of their values in a response body is
scrubbed from error excerpts. Endpoints are named by method and path without the query string
(query strings of pre-authenticated download URLs carry tokens).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import logging
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("aiq_sync.http")
# httpx logs every request URL at INFO, query string included; pre-authenticated download URLs
# carry tokens there. Quiet it unless the application configured that logger itself.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

Clock = Callable[[], float]
Sleep = Callable[[float], None]
T = TypeVar("T")
R = TypeVar("R")

# Response headers worth keeping on ApiResponse; everything else (cookies, ...) is dropped.
_KEPT_HEADERS = (
    "content-type",
    "content-length",
    "date",
    "last-modified",
    "etag",
    "link",
    "location",
    "retry-after",
    "x-retry-after",
    "x-rate-limit-time-window-ms",
    "x-rate-limit-time-reset-ms",
    "x-rate-limit-requests-quota",
    "x-rate-limit-requests-left",
    "x-bc-store-version",
)
# Header names whose values are treated as secrets (scrubbed from any text we produce).
_SECRET_HEADER = re.compile(r"auth|token|key|secret|cookie|password|signature", re.IGNORECASE)
_EXCERPT_CHARS = 200

# Statuses worth retrying: platform load or transient gateway failures. 429 is handled apart.
DEFAULT_RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Read timeout is generous: a 250-order page with embedded line items can take a while to build.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


# --------------------------------------------------------------------------------------------
# Errors, responses, stats
# --------------------------------------------------------------------------------------------


def parse_json_body(body: bytes) -> Any:
    """JSON bytes -> Python, with orjson (about 3x faster than `json` on 2 MB order pages);
    what orjson refuses but `json` reads (NaN, Infinity) still parses the same as before.
    Raises ValueError on a body that is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


class ApiError(Exception):
    """A request that failed for good. The message names the endpoint, never credentials.

    ``kind`` is one of: ``auth`` (401/403), ``not_found``, ``client_error`` (other 4xx),
    ``server_error``, ``rate_limited``, ``transport``, ``malformed`` (unparseable body),
    ``wait_budget`` (retrying would exceed the total wait budget).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        method: str,
        endpoint: str,
        status: int | None = None,
        scope: str | None = None,
        body_excerpt: str = "",
        attempts: int = 1,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.scope = scope
        self.body_excerpt = body_excerpt
        self.attempts = attempts
        # A 4xx body parsed as JSON (secrets scrubbed): per-record reasons of a rejected batch
        # (e.g. a 422's `errors: {"3.email": ...}`) do not fit in the excerpt.
        self.details = details

    @property
    def is_auth(self) -> bool:
        return self.kind == "auth"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only init: teach pickle (multiprocess executors) how to rebuild it.
        return (_rebuild_api_error, (str(self), dict(self.__dict__)))


def _rebuild_api_error(message: str, state: dict[str, Any]) -> ApiError:
    err = ApiError.__new__(ApiError)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A successful answer. ``json`` is None for 204 or an empty body."""

    status: int
    json: Any
    headers: dict[str, str]
    endpoint: str
    nbytes: int
    elapsed: float


class RequestStats:
    """Thread-safe counters for one client, exposable as plain-JSON asset metadata."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0  # HTTP attempts actually sent
        self.calls = 0  # logical calls (request() invocations)
        self.retries = 0
        self.failed_calls = 0
        self.status_counts: dict[int, int] = {}
        self.throttled_429 = 0
        self.transport_errors = 0
        self.malformed_bodies = 0
        self.rate_limit_wait_s = 0.0
        self.backoff_wait_s = 0.0
        self.bytes_received = 0

    def _add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def _status(self, status: int, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
            self.bytes_received += nbytes
            if status == 429:
                self.throttled_429 += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "requests": self.requests,
                "retries": self.retries,
                "failed_calls": self.failed_calls,
                "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
                "throttled_429": self.throttled_429,
                "transport_errors": self.transport_errors,
                "malformed_bodies": self.malformed_bodies,
                "rate_limit_wait_seconds": round(self.rate_limit_wait_s, 3),
                "backoff_wait_seconds": round(self.backoff_wait_s, 3),
                "bytes_received": self.bytes_received,
            }


# --------------------------------------------------------------------------------------------
# Rate limiting (pacing before a request is sent)
# --------------------------------------------------------------------------------------------


class RateLimiter(Protocol):
    """Pacing policy. ``acquire`` blocks until a request may be sent and returns the seconds it
    waited; ``release`` is called exactly once per ``acquire`` with the response (None after a
    transport error) so header-driven policies can learn the server's state."""

    def acquire(self) -> float: ...

    def release(self, response: httpx.Response | None) -> None: ...


class NoRateLimit:
    """For APIs that only signal limits reactively (e.g. Microsoft Graph's Retry-After)."""

    def acquire(self) -> float:
        return 0.0

    def release(self, response: httpx.Response | None) -> None:
        return None


class FixedRateLimiter:
    """Token bucket: at most ``rate`` requests per second, bursts up to ``burst``.

    Reservation style (tokens may go negative), so concurrent callers queue fairly instead of all
    waking at once and racing. Used for APIs without rate headers (Webjoint).
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    def acquire(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait

    def release(self, response: httpx.Response | None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class QuotaHeaders:
    """BigCommerce-style quota headers of one response."""

    window_ms: int
    reset_ms: int
    quota: int
    left: int

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> QuotaHeaders | None:
        try:
            return cls(
                window_ms=int(float(headers["x-rate-limit-time-window-ms"])),
                reset_ms=int(float(headers["x-rate-limit-time-reset-ms"])),
                quota=int(float(headers["x-rate-limit-requests-quota"])),
                left=int(float(headers["x-rate-limit-requests-left"])),
            )
        except (KeyError, ValueError):
            return None


class HeaderQuotaRateLimiter:
    """Paces against a fixed-window quota reported in every response (BigCommerce).

    Keeps an estimate of requests left in the current window, decremented on every send. Each
    answer also yields ``requests-left`` minus our requests sent *after* it that are still in
    flight (the server cannot have counted them when it answered; requests sent earlier are
    assumed counted). Within one window the estimate takes the lower of the two, so a late
    answer carrying an older, higher ``left`` cannot cause an overshoot, while other apps
    spending the shared quota pull it down. When the estimate
    reaches ``reserve`` every caller sleeps until the reported reset, then the full quota is
    assumed again. A 429 forces the estimate to zero so all threads pause, not just the one that
    was throttled. The result: a sync uses (quota - reserve) requests per window and no 429s,
    unless other apps sharing the store's quota spend it first.

    An answer is placed in its window by its reset time. One that belongs to a window already
    over (sent before the reset, answered after it: common with pages that take a second to
    build) is ignored: its low ``left`` is the old window's and would otherwise cap the new one
    (measured: a 100k-order back-fill spent 38 of 150 requests in a window, then idled 13 s).
    """

    def __init__(
        self,
        *,
        reserve: int = 0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.reserve = max(0, reserve)
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._quota: int | None = None
        self._window_s: float | None = None
        self._left: int | None = None  # None: unknown, let requests through
        self._reset_at: float | None = None
        self._prev_reset_at: float | None = None  # end of the window we last rolled past
        self._seq = 0
        self._rollover_seq = 0  # requests numbered above it were sent after the last rollover
        self._in_flight: set[int] = set()
        # acquire() and release() run on the same thread; the ticket links them.
        self._ticket = threading.local()

    def _margin(self) -> float:
        # Wake a little after the reported reset: clocks are compared across the network.
        return max(0.005, 0.002 * (self._window_s or 0.0))

    def acquire(self) -> float:
        waited = 0.0
        while True:
            with self._cond:
                now = self._clock()
                if self._reset_at is not None and now >= self._reset_at:
                    # Window rolled over: assume the full quota until an answer says otherwise.
                    self._left = self._quota
                    self._prev_reset_at, self._reset_at = self._reset_at, None
                    self._rollover_seq = self._seq
                if self._left is None or self._left > self.reserve:
                    if self._left is not None:
                        self._left -= 1
                    self._seq += 1
                    self._in_flight.add(self._seq)
                    self._ticket.seq = self._seq
                    return waited
                if self._reset_at is None:
                    # Budget spent by requests still in flight and no reset time known yet: wait
                    # for one of them to answer (it carries the reset time).
                    start = self._clock()
                    self._cond.wait(timeout=0.05)
                    waited += self._clock() - start
                    continue
                wait = self._reset_at - now + self._margin()
            self._sleep(wait)
            waited += wait

    def release(self, response: httpx.Response | None) -> None:
        with self._cond:
            mine = getattr(self._ticket, "seq", 0)
            self._in_flight.discard(mine)
            info = QuotaHeaders.parse(response.headers) if response is not None else None
            if info is None:
                self._cond.notify_all()
                return
            now = self._clock()
            self._quota = info.quota
            self._window_s = info.window_ms / 1000.0
            half = 0.5 * self._window_s
            reset_at = now + info.reset_ms / 1000.0
            if self._reset_at is not None:
                current_end: float | None = self._reset_at
            elif self._prev_reset_at is not None:
                current_end = self._prev_reset_at + self._window_s
            else:
                current_end = None
            if current_end is not None and reset_at < current_end - half:
                self._cond.notify_all()  # an answer from a window that is over: stale
                return
            left = info.left - sum(1 for seq in self._in_flight if seq > mine)
            if response is not None and response.status_code == 429:
                left = 0
            new_window = self._reset_at is None or reset_at > self._reset_at + half
            if new_window:
                self._reset_at = reset_at
                self._left = left
            else:
                self._left = left if self._left is None else min(self._left, left)
                if mine > self._rollover_seq:
                    # Sent after the rollover, so surely counted in this window: arrival + time
                    # left overestimates its end by the answer's latency, never underestimates;
                    # the fastest answer gives the tightest safe reset.
                    self._reset_at = min(self._reset_at, reset_at)
            self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# Retry policy
# --------------------------------------------------------------------------------------------


class RetryPolicy(BaseModel):
    """How hard to try. Configured per connector; validated because it comes from settings."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(6, ge=1, description="attempts for transient failures, incl. first")
    max_rate_limit_retries: int = Field(10, ge=0, description="header-guided waits after a 429")
    max_malformed_retries: int = Field(2, ge=0, description="re-reads of an unparseable 2xx body")
    backoff_base: float = Field(0.5, gt=0, description="first back-off ceiling, seconds")
    backoff_max: float = Field(30.0, gt=0, description="largest single back-off, seconds")
    max_header_wait: float = Field(300.0, gt=0, description="cap on one Retry-After style wait")
    max_total_wait: float = Field(900.0, gt=0, description="sleep budget of one call, seconds")
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential back-off with full jitter (uniform in [0, ceiling])."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** max(0, failures - 1)))
        return rng.uniform(0, ceiling)


def header_wait_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Longest wait any of the server's retry headers asks for, or None if there is none.

    Reads ``X-Retry-After`` (seconds), ``Retry-After`` (seconds or HTTP date) and
    ``X-Rate-Limit-Time-Reset-Ms``; BigCommerce says to honour the longer of them.
    """
    waits: list[float] = []
    for name in ("x-retry-after", "retry-after"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            waits.append(float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            ref = now or datetime.now(UTC)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            waits.append((when - ref).total_seconds())
    raw_reset = headers.get("x-rate-limit-time-reset-ms")
    if raw_reset is not None:
        with contextlib.suppress(ValueError):
            waits.append(float(raw_reset) / 1000.0)
    if not waits:
        return None
    return max(0.0, max(waits))


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


@dataclass
class _CallState:
    method: str
    endpoint: str
    scope: str | None
    attempts: int = 0
    transient_failures: int = 0
    rate_limit_retries: int = 0
    malformed: int = 0
    waited: float = 0.0


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once:
    loading the CA bundle costs ~25 ms, and every landing step opens its own clients."""
    return httpx.create_ssl_context()


class ApiClient:
    """HTTP client for one API account: base URL, auth headers, pacing, retries, stats.

    ``scopes`` maps a path prefix (optionally prefixed with a method, e.g. ``"POST v3/customers"``)
    to the permission the endpoint needs, so a 401/403 can tell the merchant what to grant; a
    ``scope=`` passed to one call wins.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        secret_values: Iterable[str] = (),
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        max_concurrency: int = 4,
        scopes: Mapping[str, str] | None = None,
        name: str = "api",
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        follow_redirects: bool = False,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        headers = dict(headers or {})
        self.name = name
        self.retry = retry or RetryPolicy()
        self.rate_limiter: RateLimiter = rate_limiter or NoRateLimit()
        self.max_concurrency = max_concurrency
        self.stats = RequestStats()
        self._scopes = {self._norm_scope_key(k): v for k, v in (scopes or {}).items()}
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        secrets = {v for k, v in headers.items() if _SECRET_HEADER.search(k)}
        secrets.update(secret_values)
        self._secrets = sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True)
        limits = httpx.Limits(
            max_connections=max_concurrency + 2, max_keepalive_connections=max_concurrency + 2
        )
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
            follow_redirects=follow_redirects,
            verify=_tls_context(),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ------------------------------------------------------------------------

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, scope: str | None = None
    ) -> ApiResponse:
        return self.request("GET", path, params=params, scope=scope)

    def post_json(
        self,
        path: str,
        body: Any,
        *,
        params: Mapping[str, Any] | None = None,
        scope: str | None = None,
        idempotent: bool = False,
    ) -> ApiResponse:
        return self.request(
            "POST", path, params=params, json_body=body, scope=scope, idempotent=idempotent
        )

    def put_json(
        self, path: str, body: Any, *, scope: str | None = None, idempotent: bool = True
    ) -> ApiResponse:
        return self.request("PUT", path, json_body=body, scope=scope, idempotent=idempotent)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        scope: str | None = None,
        idempotent: bool | None = None,
        parse_json: bool = True,
    ) -> ApiResponse:
        """Send one logical request with pacing and retries; return the parsed answer.

        Non-idempotent calls (POST by default) are retried only when the server surely did not
        act on them: connection failures before sending, and 429. A POST that timed out may have
        created records; sending it again could duplicate them.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
        endpoint = self.endpoint_name(path)
        state = _CallState(
            method=method,
            endpoint=endpoint,
            scope=scope or self.scope_for(method, path),
        )
        self.stats._add(calls=1)
        try:
            return self._request_loop(
                state, path, params, json_body, content, headers, idempotent, parse_json
            )
        except ApiError:
            self.stats._add(failed_calls=1)
            raise

    # -- concurrency helpers -----------------------------------------------------------------

    def imap_concurrent(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        max_concurrency: int | None = None,
    ) -> Iterator[R]:
        """Apply ``fn`` (usually one API call) to each item on a thread pool; yield in order."""
        yield from imap_bounded(fn, items, max_concurrency or self.max_concurrency)

    def map_concurrent(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        max_concurrency: int | None = None,
    ) -> list[R]:
        return list(self.imap_concurrent(fn, items, max_concurrency=max_concurrency))

    # -- naming ------------------------------------------------------------------------------

    @staticmethod
    def endpoint_name(path: str) -> str:
        """Path without the query string (it may hold secrets); absolute URLs keep their host."""
        url = httpx.URL(path)
        if url.is_absolute_url:
            return f"{url.host}{url.path}"
        return path.split("?", 1)[0].split("#", 1)[0].lstrip("/")

    @staticmethod
    def _norm_scope_key(key: str) -> str:
        method, _, rest = key.partition(" ")
        if rest and method.isalpha() and method.isupper():
            return f"{method} {rest.strip().lstrip('/')}"
        return key.strip().lstrip("/")

    def scope_for(self, method: str, path: str) -> str | None:
        name = self.endpoint_name(path)
        best: tuple[int, str] | None = None
        for key, scope in self._scopes.items():
            m, _, rest = key.partition(" ")
            if rest and m.isupper():
                if m != method:
                    continue
                prefix = rest
            else:
                prefix = key
            if name == prefix or name.startswith(prefix.rstrip("/") + "/"):
                # Longest prefix wins; a method-specific key beats a generic one of equal length.
                rank = len(prefix) * 2 + (1 if rest and m.isupper() else 0)
                if best is None or rank > best[0]:
                    best = (rank, scope)
        return best[1] if best else None

    # -- internals ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _excerpt(self, body: bytes) -> str:
        text = body[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
        text = " ".join(text.split())
        if len(text) > _EXCERPT_CHARS:
            text = text[:_EXCERPT_CHARS] + "..."
        return self._scrub(text)

    def _jitter(self, failures: int) -> float:
        with self._rng_lock:
            return self.retry.backoff(failures, self._rng)

    def _wait(self, state: _CallState, seconds: float, *, rate_limit: bool, why: str) -> None:
        if state.waited + seconds > self.retry.max_total_wait:
            raise ApiError(
                f"{state.method} {state.endpoint}: giving up, retrying ({why}) would exceed the "
                f"wait budget of {self.retry.max_total_wait:.0f}s after {state.attempts} attempts",
                kind="wait_budget",
                method=state.method,
                endpoint=state.endpoint,
                scope=state.scope,
                attempts=state.attempts,
            )
        level = logging.WARNING if not rate_limit or seconds >= 1.0 else logging.INFO
        logger.log(
            level,
            "%s %s %s: %s; attempt %d, waiting %.2fs",
            self.name,
            state.method,
            state.endpoint,
            why,
            state.attempts,
            seconds,
        )
        if seconds > 0:
            self._sleep(seconds)
        state.waited += seconds
        self.stats._add(retries=1)
        if rate_limit:
            self.stats._add(rate_limit_wait_s=seconds)
        else:
            self.stats._add(backoff_wait_s=seconds)

    def _give_up(self, state: _CallState, kind: str, status: int | None, detail: str) -> ApiError:
        return ApiError(
            f"{state.method} {state.endpoint}: {detail} (gave up after {state.attempts} attempts)",
            kind=kind,
            method=state.method,
            endpoint=state.endpoint,
            status=status,
            scope=state.scope,
            attempts=state.attempts,
        )

    def _send(
        self,
        state: _CallState,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[httpx.Response | None, bytes, Exception | None]:
        with self._slots:
            paced = self.rate_limiter.acquire()
            if paced > 0:
                self.stats._add(rate_limit_wait_s=paced)
                logger.log(
                    logging.INFO if paced >= 0.5 else logging.DEBUG,
                    "%s %s %s: paced %.2fs to stay within the rate limit",
                    self.name,
                    state.method,
                    state.endpoint,
                    paced,
                )
            state.attempts += 1
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    state.method,
                    path,
                    params=params,
                    json=json_body,
                    content=content,
                    headers=headers,
                )
                body = response.content
            except httpx.TransportError as exc:
                self.rate_limiter.release(None)
                self.stats._add(requests=1, transport_errors=1)
                return None, b"", exc
            self.rate_limiter.release(response)
        self.stats._status(response.status_code, len(body))
        return response, body, None

    def _request_loop(
        self,
        state: _CallState,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        idempotent: bool,
        parse_json: bool,
    ) -> ApiResponse:
        policy = self.retry
        while True:
            t0 = self._clock()
            response, body, exc = self._send(state, path, params, json_body, content, headers)

            if exc is not None:
                reason = f"{type(exc).__name__}: {self._scrub(str(exc)) or 'no detail'}"
                not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                retryable = isinstance(
                    exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
                ) and (idempotent or not_sent or isinstance(exc, httpx.PoolTimeout))
                state.transient_failures += 1
                if not retryable or state.transient_failures >= policy.max_attempts:
                    raise self._give_up(state, "transport", None, reason)
                self._wait(
                    state, self._jitter(state.transient_failures), rate_limit=False, why=reason
                )
                continue

            assert response is not None
            status = response.status_code
            reason_phrase = response.reason_phrase or ""

            if status == 429:
                wait = header_wait_seconds(response.headers)
                if wait is not None:
                    state.rate_limit_retries += 1
                    if state.rate_limit_retries > policy.max_rate_limit_retries:
                        raise self._give_up(state, "rate_limited", 429, "still rate limited (429)")
                    wait = min(wait, policy.max_header_wait) + 0.001
                    self._wait(state, wait, rate_limit=True, why="429 rate limited")
                    continue
                # No headers: platform under load, back off like a 5xx.
                state.transient_failures += 1
                if state.transient_failures >= policy.max_attempts:
                    raise self._give_up(
                        state, "rate_limited", 429, "429 without rate-limit headers (overload)"
                    )
                self._wait(
                    state,
                    self._jitter(state.transient_failures),
                    rate_limit=False,
                    why="429 without rate-limit headers",
                )
                continue

            if status in policy.retry_statuses:
                state.transient_failures += 1
                detail = f"{status} {reason_phrase}".strip()
                if not idempotent or state.transient_failures >= policy.max_attempts:
                    err = self._give_up(state, "server_error", status, detail)
                    err.body_excerpt = self._excerpt(body)
                    raise err
                # Rate headers ride on every BigCommerce answer; only an explicit Retry-After
                # (Graph sends one with 503) should replace the jittered back-off.
                explicit = {
                    k: response.headers[k]
                    for k in ("retry-after", "x-retry-after")
                    if k in response.headers
                }
                wait = header_wait_seconds(explicit) if explicit else None
                if wait is None:
                    wait = self._jitter(state.transient_failures)
                else:
                    wait = min(wait, policy.max_header_wait)
                self._wait(state, wait, rate_limit=False, why=detail)
                continue

            if status >= 400:
                raise self._client_error(state, response, body)

            if status >= 300:
                raise ApiError(
                    f"{state.method} {state.endpoint}: unexpected redirect {status}",
                    kind="client_error",
                    method=state.method,
                    endpoint=state.endpoint,
                    status=status,
                    scope=state.scope,
                    attempts=state.attempts,
                )

            data: Any = None
            if parse_json and status != 204 and body.strip():
                try:
                    data = parse_json_body(body)
                    malformed = False
                except ValueError:
                    malformed = True
                if malformed:
                    # A truncated or HTML body on a 2xx is usually a transient proxy hiccup.
                    state.malformed += 1
                    self.stats._add(malformed_bodies=1)
                    ctype = response.headers.get("content-type", "unknown content-type")
                    detail = (
                        f"{status} with a body that is not valid JSON ({ctype}, {len(body)} "
                        f"bytes): {self._excerpt(body)!r}"
                    )
                    if state.malformed > policy.max_malformed_retries:
                        err = self._give_up(state, "malformed", status, detail)
                        err.body_excerpt = self._excerpt(body)
                        raise err
                    self._wait(
                        state,
                        self._jitter(state.malformed),
                        rate_limit=False,
                        why=f"{status} body is not valid JSON ({ctype})",
                    )
                    continue
            elif not parse_json:
                data = body
            kept = {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers}
            return ApiResponse(
                status=status,
                json=data,
                headers=kept,
                endpoint=state.endpoint,
                nbytes=len(body),
                elapsed=self._clock() - t0,
            )

    def _client_error(self, state: _CallState, response: httpx.Response, body: bytes) -> ApiError:
        status = response.status_code
        excerpt = self._excerpt(body)
        where = f"{state.method} {state.endpoint}"
        if status in (401, 403):
            need = (
                f"it needs the '{state.scope}' permission"
                if state.scope
                else "check the permissions (scopes) granted to the API account"
            )
            if status == 401:
                msg = f"{where}: 401 Unauthorized, the credentials were rejected (missing, wrong "
                msg += f"or revoked token); {need}"
            else:
                msg = f"{where}: 403 Forbidden, the API account is not allowed to call this; {need}"
            kind = "auth"
        elif status == 404:
            msg, kind = f"{where}: 404 Not Found", "not_found"
        else:
            phrase = response.reason_phrase or ""
            msg, kind = f"{where}: {status} {phrase}".rstrip(), "client_error"
        if excerpt:
            msg += f"; server said: {excerpt}"
        if status >= 500:
            kind = "server_error"
        return ApiError(
            msg,
            kind=kind,
            method=state.method,
            endpoint=state.endpoint,
            status=status,
            scope=state.scope,
            body_excerpt=excerpt,
            attempts=state.attempts,
            details=self._details(body) if status < 500 else None,
        )

    def _details(self, body: bytes) -> Any:
        if not body.strip() or len(body) > 1 << 20:
            return None
        try:
            return json.loads(self._scrub(body.decode("utf-8", errors="replace")))
        except ValueError:
            return None


# --------------------------------------------------------------------------------------------
# Bounded concurrency
# --------------------------------------------------------------------------------------------


def imap_bounded(fn: Callable[[T], R], items: Iterable[T], max_concurrency: int) -> Iterator[R]:
    """Run ``fn`` over ``items`` with at most ``max_concurrency`` calls at once; yield in input
    order. Only a small window of futures exists at a time, so 100k items cost no memory up
    front. The first exception cancels what has not started and is re-raised."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be >= 1")
    window = max_concurrency * 2
    it = iter(items)
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="aiq-http") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

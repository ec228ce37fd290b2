"""A faithful local fake of the BigCommerce REST API, served on loopback.

Built against the official OpenAPI specs (see ``/work/shared/reference/bigcommerce``): paths,
query parameters, body shapes, RFC-2822 v2 dates, 4-decimal money strings, 204 past the last v2
page, ``meta.pagination`` and cursor paging on v3, the store-wide rate-limit window with its four
headers on every answer, 401/403 by token and scope, 413 above ``limit=250``, and opt-in chaos
(5xx bursts, header-less 429s, slow answers, truncated JSON, HTML 200s, connection resets, rows
modified while a client pages).

Stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive: one thread per client connection, so a
client with N pooled connections gets N server threads. Data is generated lazily by id
(``bigcommerce_data.StoreData``), so 1M orders cost a few numpy arrays.

    with BigCommerceSandbox(orders=5000, time_scale=0.01) as sb:
        api_path = sb.api_path  # http://127.0.0.1:PORT/stores/<hash>/
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import json
import logging
import math
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import orjson
from pydantic import Field

from aiq_sync.sandbox.bigcommerce_data import StoreData
from aiq_sync.sandbox.common import Chaos as _ChaosBase
from aiq_sync.sandbox.common import ChaosState as _ChaosState
from aiq_sync.sandbox.common import (
    Fault,
    SandboxClock,
    SandboxHandler,
    ServerThread,
    handle_admin,
)

__all__ = ["BigCommerceSandbox", "Chaos", "Fault", "main"]

logger = logging.getLogger("aiq_sync.sandbox.bigcommerce")

# Scope names as the merchant sees them when creating the API account (README, BigCommerce).
SCOPE_INFORMATION = "Information & Settings Read"
SCOPE_ORDERS = "Orders Read"
SCOPE_CUSTOMERS_READ = "Customers Read"
SCOPE_CUSTOMERS_WRITE = "Customers Write"
SCOPE_PRODUCTS = "Products Read"
SCOPE_INVENTORY = "Store Inventory Read"
SCOPE_LOCATIONS = "Store Locations Read"
ALL_SCOPES = frozenset(
    {
        SCOPE_INFORMATION,
        SCOPE_ORDERS,
        SCOPE_CUSTOMERS_READ,
        SCOPE_CUSTOMERS_WRITE,
        SCOPE_PRODUCTS,
        SCOPE_INVENTORY,
        SCOPE_LOCATIONS,
    }
)
# Path (relative to the API path) -> scope it needs; the same map a connector gives ApiClient.
ENDPOINT_SCOPES = {
    "v2/store": SCOPE_INFORMATION,
    "v2/orders": SCOPE_ORDERS,
    "GET v3/customers": SCOPE_CUSTOMERS_READ,
    "POST v3/customers": SCOPE_CUSTOMERS_WRITE,
    "v3/catalog": SCOPE_PRODUCTS,
    "v3/inventory/items": SCOPE_INVENTORY,
    "v3/inventory/locations": SCOPE_LOCATIONS,
}

V2_MAX_LIMIT = 250
V3_MAX_LIMIT = 250
INVENTORY_MAX_LIMIT = 1000  # the inventory/locations specs allow 1000 items per payload
MAX_CREATE_BATCH = 10
_ERROR_TYPE = "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
_HTML_BODY = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
    b"<h1>Our store is temporarily unavailable</h1><p>Please try again shortly.</p>"
    b"</body></html>"
)


# --------------------------------------------------------------------------------------------
# Chaos configuration
# --------------------------------------------------------------------------------------------


class Chaos(_ChaosBase):
    """Fault injection (see ``common.Chaos``) plus rows modified while a client pages."""

    # Rows bumped (date_modified := now) each time a page of a listing is served:
    modify_during_paging: int = Field(0, ge=0, description="not-yet-served rows: they move")
    modify_served_during_paging: int = Field(0, ge=0, description="served rows: causes skips")


# --------------------------------------------------------------------------------------------
# Rate-limit window
# --------------------------------------------------------------------------------------------


class _QuotaWindow:
    """Fixed window shared by all clients of the store, as BigCommerce does it."""

    def __init__(self, quota: int, window_ms: int, time_scale: float) -> None:
        self.quota = quota
        self.window_s = window_ms / 1000.0 * time_scale
        self.window_ms_reported = max(1, round(window_ms * time_scale))
        self.time_scale = time_scale
        self.lock = threading.Lock()
        self.start: float | None = None
        self.used = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        with self.lock:
            now = time.monotonic()
            if self.start is None or now >= self.start + self.window_s:
                self.start, self.used = now, 0
            remaining = self.start + self.window_s - now
            allowed = self.used < self.quota
            if allowed:
                self.used += 1
            left = self.quota - self.used
        headers = {
            "X-Rate-Limit-Time-Window-Ms": str(self.window_ms_reported),
            "X-Rate-Limit-Time-Reset-Ms": str(max(1, math.ceil(remaining * 1000))),
            "X-Rate-Limit-Requests-Quota": str(self.quota),
            "X-Rate-Limit-Requests-Left": str(max(0, left)),
        }
        if not allowed:
            # Whole seconds like the live API; with a scaled window whole seconds would dwarf
            # it, so fractions are reported instead (documented deviation).
            retry = math.ceil(remaining) if self.time_scale == 1 else round(remaining, 3)
            headers["X-Retry-After"] = str(retry)
        return allowed, headers


# --------------------------------------------------------------------------------------------
# Request parsing helpers
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, v2: bool, title: str, errors: dict[str, Any] | None = None):
        super().__init__(title)
        self.status = status
        self.v2 = v2
        self.title = title
        self.errors = errors or {}


def _parse_dt(raw: str) -> datetime:
    """ISO-8601 (with or without time/offset) or RFC-2822; naive values are taken as UTC."""
    value = raw.strip()
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        if re.search(r"\d\d:\d\d(:\d\d)?\s+\d{4}$", value):
            # "... 11:26:42 0000": an RFC-2822 "+0000" sent unencoded, its "+" decoded to a
            # space. Python's parser would guess the sign; refuse it so a client that forgets
            # to encode fails loudly here rather than on the live API.
            raise ValueError(value) from None
        try:
            dt = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            raise ValueError(value) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _is_date_only(raw: str) -> bool:
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw.strip()) is not None


def _b64(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(token: str) -> dict[str, Any]:
    padded = token + "=" * (-len(token) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode()))


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    scope: str | None
    handler: str


def _route(method: str, path: str, name: str, scope: str | None, handler: str) -> _Route:
    return _Route(method, re.compile(path + r"$"), name, scope, handler)


_ROUTES = (
    _route("GET", r"v2/store(?:\.json)?", "GET /v2/store", SCOPE_INFORMATION, "store"),
    _route("GET", r"v2/time(?:\.json)?", "GET /v2/time", None, "time"),
    _route("GET", r"v2/orders/count(?:\.json)?", "GET /v2/orders/count", SCOPE_ORDERS, "count"),
    _route("GET", r"v2/orders(?:\.json)?", "GET /v2/orders", SCOPE_ORDERS, "orders"),
    _route("GET", r"v2/orders/(\d+)(?:\.json)?", "GET /v2/orders/{id}", SCOPE_ORDERS, "order"),
    _route(
        "GET",
        r"v2/orders/(\d+)/products(?:\.json)?",
        "GET /v2/orders/{id}/products",
        SCOPE_ORDERS,
        "order_products",
    ),
    _route("GET", r"v3/customers", "GET /v3/customers", SCOPE_CUSTOMERS_READ, "customers"),
    _route(
        "POST", r"v3/customers", "POST /v3/customers", SCOPE_CUSTOMERS_WRITE, "create_customers"
    ),
    _route("GET", r"v3/catalog/products", "GET /v3/catalog/products", SCOPE_PRODUCTS, "products"),
    _route("GET", r"v3/inventory/items", "GET /v3/inventory/items", SCOPE_INVENTORY, "inventory"),
    _route(
        "GET", r"v3/inventory/locations", "GET /v3/inventory/locations", SCOPE_LOCATIONS, "locs"
    ),
)


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON-able, or bytes, or None for no body
    content_type: str = "application/json"


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class BigCommerceSandbox:
    """Local fake BigCommerce store. Context manager; ``start()`` returns the API path."""

    def __init__(
        self,
        *,
        store_hash: str = "sandbox1",
        orders: int = 1000,
        customers: int = 300,
        products: int = 60,
        locations: int = 3,
        items_per_order: float = 3.0,
        history_days: int = 730,
        seed: int = 42,
        token: str = "sandbox-token",
        scopes: Sequence[str] | frozenset[str] = ALL_SCOPES,
        quota: int = 150,
        window_ms: int = 30_000,
        time_scale: float = 1.0,
        chaos: Chaos | dict[str, Any] | None = None,
        now: datetime | None = None,
        timezone: str = "America/Chicago",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9]+", store_hash):
            raise ValueError("store_hash must be alphanumeric")
        self.store_hash = store_hash
        self.token = token
        self.scopes = frozenset(scopes)
        self.chaos = chaos if isinstance(chaos, Chaos) else Chaos(**(chaos or {}))
        self.clock = SandboxClock(now)
        self.data = StoreData(
            store_hash=store_hash,
            orders=orders,
            customers=customers,
            products=products,
            locations=locations,
            items_per_order=items_per_order,
            history_days=history_days,
            seed=seed,
            now_ts=self.clock.start_ts,
            timezone=timezone,
            quota=quota,
        )
        self._quota = _QuotaWindow(quota, window_ms, time_scale)
        self._chaos = _ChaosState(self.chaos, seed)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self.reset_counters()
        self._edited_customers: set[int] = set()  # first name changed by modify_share()
        self._modify_rounds = 0
        self._cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._server = ServerThread(self, host, port, "bigcommerce-sandbox")
        self.api_path = ""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> str:
        """Bind (port 0 picks a free port), serve in a background thread, return the API path."""
        port = self._server.start()
        self.api_path = f"http://{self._server.host}:{port}/stores/{self.store_hash}/"
        return self.api_path

    def stop(self) -> None:
        self._server.stop()

    @property
    def port(self) -> int:
        return self._server.port

    def __enter__(self) -> BigCommerceSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ----------------------------------------------------------------------

    def reset_counters(self) -> None:
        with self._stats_lock:
            self._stats = {
                "requests_total": 0,
                "by_endpoint": {},
                "by_status": {},
                "throttled_429": 0,
                "customers_created": 0,
                "rows_modified_during_paging": 0,
            }

    def counters(self) -> dict[str, Any]:
        """A snapshot: totals, per endpoint, per status, 429s served, customers created,
        and faults injected by kind."""
        with self._stats_lock:
            snap = json.loads(json.dumps(self._stats))
        with self._chaos.lock:
            snap["faults"] = dict(self._chaos.injected)
        return snap

    def now_ts(self) -> int:
        """The sandbox's current time: fixed when ``now`` was given, else wall-clock-like."""
        return self.clock.now()

    def _count(self, key: str, sub: str | None = None, n: int = 1) -> None:
        with self._stats_lock:
            if sub is None:
                self._stats[key] += n
            else:
                bucket = self._stats[key]
                bucket[sub] = bucket.get(sub, 0) + n

    # -- benchmark control (also served under /_admin/) ----------------------------------

    def advance_clock(self, seconds: int) -> int:
        """Move the sandbox's clock (e.g. a day: "the next night"); returns the new now."""
        return self.clock.advance(seconds)

    def modify_share(self, share: float) -> dict[str, int]:
        """A night of edits: ``share`` of orders change status (refunded, or completed if they
        were refunded) and ``share`` of customers change first name, all modified "now".
        Deterministic from the seed and how many rounds came before."""
        d = self.data
        self._modify_rounds += 1
        rng = np.random.default_rng([d.seed, 7_000 + self._modify_rounds])
        ts = self.now_ts()
        n_o = min(d.n_orders, round(d.n_orders * share))
        n_c = min(d.n_customers, round(d.n_customers * share))
        oids = rng.choice(d.n_orders, n_o, replace=False) + 1 if n_o else np.zeros(0, np.int64)
        cids = rng.choice(d.n_customers, n_c, replace=False) + 1 if n_c else np.zeros(0, np.int64)
        with d.lock:
            status = d.o_status[oids - 1]
            d.o_status[oids - 1] = np.where(status == 4, 10, 4)
            d.o_modified[oids - 1] = ts
            d.c_modified[cids - 1] = ts
            self._edited_customers.update(int(c) for c in cids)
            d.mutate()
        return {"orders": n_o, "customers": n_c, "now": ts}

    def holdings(self) -> dict[str, int]:
        """What a full sync must end up with: orders, their line items, customers."""
        d = self.data
        with d.lock:
            return {
                "orders": d.n_orders,
                "items": int(d.o_nitems.sum()),
                "customers": d.n_customers,
            }

    def _customer(self, cid: int, with_addresses: bool) -> dict[str, Any]:
        record = self.data.customer_record(cid, include_addresses=with_addresses)
        if cid in self._edited_customers:
            record["first_name"] = f"{record['first_name']} Jr"
        return record

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, handler: SandboxHandler) -> None:
        """Serve one request on ``handler`` (called from the server's connection thread)."""
        if handle_admin(self, handler):
            return
        split = urlsplit(handler.path)
        prefix = f"/stores/{self.store_hash}/"
        self._count("requests_total")
        api_path = split.path[len(prefix) :] if split.path.startswith(prefix) else None
        v2 = (api_path or "").startswith("v2/")
        chaos_path = api_path or ""

        if self._chaos.hit("connection_reset", chaos_path):
            handler.reset_connection()
            return
        if self._chaos.hit("throttle_without_headers", chaos_path):
            # Platform overload: a 429 without any rate-limit headers.
            self._send(handler, _Reply(429, self._error(429, v2, "Too many requests")), {}, None)
            return

        allowed, rate_headers = self._quota.take()
        route, params = self._match(handler.command, api_path)
        route_name = route.name if route else f"{handler.command} {split.path}"

        if self._chaos.hit("server_error", chaos_path):
            statuses = self.chaos.server_error_statuses
            status = statuses[(self._chaos.injected["server_error"] - 1) % len(statuses)]
            reply = _Reply(status, self._error(status, v2, "Internal server error"))
            self._send(handler, reply, rate_headers, route_name)
            return
        if self._chaos.hit("slow", chaos_path):
            self._server.stopping.wait(self.chaos.slow_seconds)

        if not allowed:
            self._count("throttled_429")
            reply = _Reply(429, self._error(429, v2, "Too many requests"))
            self._send(handler, reply, rate_headers, route_name)
            return
        if handler.headers.get("X-Auth-Token") != self.token:
            # Same body whether the token is missing or wrong; never echo what was sent.
            title = "No credentials were supplied in the request or they are invalid"
            self._send(handler, _Reply(401, self._error(401, v2, title)), rate_headers, route_name)
            return
        if api_path is None or route is None:
            if api_path is not None and any(r.pattern.match(api_path) for r in _ROUTES):
                reply = _Reply(405, self._error(405, v2, "Method not allowed"))
            else:
                title = "The requested resource was not found"
                reply = _Reply(404, self._error(404, v2, title))
            self._send(handler, reply, rate_headers, route_name)
            return
        if route.scope and not self._granted(route.scope):
            title = "You don't have a required scope to access the endpoint"
            self._send(handler, _Reply(403, self._error(403, v2, title)), rate_headers, route_name)
            return

        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            reply = getattr(self, f"_h_{route.handler}")(handler, query, *params)
        except _BadRequest as exc:
            body = self._error(exc.status, exc.v2, exc.title, exc.errors)
            reply = _Reply(exc.status, body)
        self._send(handler, reply, rate_headers, route_name, chaos_path)

    def _match(self, method: str, api_path: str | None) -> tuple[_Route | None, tuple[str, ...]]:
        if api_path is None:
            return None, ()
        for route in _ROUTES:
            m = route.pattern.match(api_path)
            if m and route.method == method:
                return route, m.groups()
        return None, ()

    def _granted(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        return scope.endswith(" Read") and scope[: -len("Read")] + "Write" in self.scopes

    def _error(
        self, status: int, v2: bool, title: str, errors: dict[str, Any] | None = None
    ) -> Any:
        # v2 answers errors as an array of {status, message}; v3 as the spec's ErrorResponse.
        if v2:
            item: dict[str, Any] = {"status": status, "message": title}
            if errors:
                item["details"] = errors
            return [item]
        return {"status": status, "title": title, "type": _ERROR_TYPE, "errors": errors or {}}

    def _send(
        self,
        handler: SandboxHandler,
        reply: _Reply,
        rate_headers: dict[str, str],
        route_name: str | None,
        chaos_path: str | None = None,
    ) -> None:
        if reply.body is None:
            body = b""
        elif isinstance(reply.body, bytes):
            body = reply.body
        else:
            body = orjson.dumps(reply.body)  # UTF-8, compact: ~10x faster than json on 2 MB
        content_type = reply.content_type
        if chaos_path is not None and reply.status == 200 and body:
            if self._chaos.hit("truncated_json", chaos_path):
                body = body[: max(1, len(body) // 2)]
            elif self._chaos.hit("html_200", chaos_path):
                body, content_type = _HTML_BODY, "text/html; charset=UTF-8"
        self._count("by_status", str(reply.status))
        if route_name:
            self._count("by_endpoint", route_name)
        handler.write_response(reply.status, body, content_type, rate_headers)

    # -- paging helpers ------------------------------------------------------------------

    def _limit(self, query: dict[str, str], v2: bool, max_limit: int, default: int = 50) -> int:
        raw = query.get("limit", "")
        if raw == "":
            return default
        try:
            limit = int(float(raw))
        except ValueError:
            raise _BadRequest(400, v2, "The field 'limit' is invalid.") from None
        if limit > max_limit:
            raise _BadRequest(
                413,
                v2,
                f"The limit parameter exceeds the maximum of {max_limit}.",
                {"max_limit": max_limit},
            )
        return max(1, limit)

    def _page(self, query: dict[str, str], v2: bool) -> int:
        try:
            return max(1, int(float(query.get("page", "1") or 1)))
        except ValueError:
            raise _BadRequest(400, v2, "The field 'page' is invalid.") from None

    def _cached(self, key: tuple[Any, ...], build: Callable[[], np.ndarray]) -> np.ndarray:
        key = (self.data.version, *key)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = build()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return value

    def _v3_links(self, query: dict[str, str], page: int, limit: int, pages: int) -> dict[str, str]:
        def link(p: int) -> str:
            q = {k: v for k, v in query.items() if k not in ("page", "limit", "after", "before")}
            q.update(page=str(p), limit=str(limit))
            return "?" + urlencode(q)

        links = {"current": link(page)}
        if page > 1:
            links["previous"] = link(page - 1)
        if page < pages:
            links["next"] = link(page + 1)
        return links

    def _v3_page(
        self, query: dict[str, str], ids: np.ndarray, max_limit: int = V3_MAX_LIMIT
    ) -> tuple[np.ndarray, dict[str, Any]]:
        limit = self._limit(query, False, max_limit)
        page = self._page(query, False)
        total = len(ids)
        pages = max(1, math.ceil(total / limit))
        chunk = ids[(page - 1) * limit : page * limit]
        meta = {
            "pagination": {
                "total": total,
                "count": len(chunk),
                "per_page": limit,
                "current_page": page,
                "total_pages": pages,
                "links": self._v3_links(query, page, limit, pages),
            }
        }
        return chunk, meta

    def _bump_during_paging(
        self, ordered: np.ndarray, start: int, end: int, limit: int, kind: str
    ) -> None:
        chaos = self.chaos
        if not (chaos.modify_during_paging or chaos.modify_served_during_paging):
            return
        rng = self._chaos.rng
        picked: list[int] = []
        with self._chaos.lock:
            upcoming = ordered[end : end + 3 * limit]
            if chaos.modify_during_paging and len(upcoming):
                k = min(chaos.modify_during_paging, len(upcoming))
                picked += [int(x) for x in rng.sample(list(upcoming), k)]
            served = ordered[:start]
            if chaos.modify_served_during_paging and len(served):
                k = min(chaos.modify_served_during_paging, len(served))
                picked += [int(x) for x in rng.sample(list(served), k)]
        if not picked:
            return
        ts = self.now_ts()
        if kind == "orders":
            self.data.bump_orders(picked, ts)
        else:
            self.data.bump_customers(picked, ts)
        self._count("rows_modified_during_paging", n=len(picked))

    # -- v2 handlers ---------------------------------------------------------------------

    def _h_store(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        return _Reply(200, self.data.store_record())

    def _h_time(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        return _Reply(200, {"time": self.now_ts()})

    def _v2_ts(self, query: dict[str, str], name: str) -> float | None:
        raw = query.get(name)
        if raw is None or raw == "":
            return None
        try:
            return _parse_dt(raw).timestamp()
        except ValueError:
            # Typical cause: an RFC-2822 "+0000" sent unencoded arrives as " 0000".
            raise _BadRequest(400, True, f"The field '{name}' is invalid.") from None

    def _v2_int(self, query: dict[str, str], name: str) -> int | None:
        raw = query.get(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise _BadRequest(400, True, f"The field '{name}' is invalid.") from None

    def _order_ids(self, query: dict[str, str], *, sort: bool = True) -> np.ndarray:
        d = self.data
        min_mod = self._v2_ts(query, "min_date_modified")
        max_mod = self._v2_ts(query, "max_date_modified")
        min_cre = self._v2_ts(query, "min_date_created")
        max_cre = self._v2_ts(query, "max_date_created")
        min_id = self._v2_int(query, "min_id")
        max_id = self._v2_int(query, "max_id")
        status = self._v2_int(query, "status_id")
        customer = self._v2_int(query, "customer_id")
        channel = self._v2_int(query, "channel_id")
        field, _, direction = (query.get("sort") or "id").partition(":")
        if field not in ("id", "customer_id", "date_created", "date_modified", "status_id"):
            if field not in ("channel_id", "external_id"):
                raise _BadRequest(400, True, "The field 'sort' is invalid.")
            field = "id"  # constant columns here: ordering falls back to id
        desc = direction.lower() == "desc"
        key = ("orders", min_mod, max_mod, min_cre, max_cre, min_id, max_id, status, customer)
        key += (channel, field if sort else "id", desc if sort else False)

        def build() -> np.ndarray:
            with d.lock:
                created, modified = d.o_created, d.o_modified.copy()
            lo, hi = 0, d.n_orders
            if min_id is not None:
                lo = max(lo, min_id - 1)
            if max_id is not None:
                hi = min(hi, max_id)
            if min_cre is not None:
                lo = max(lo, int(np.searchsorted(created, min_cre, side="left")))
            if max_cre is not None:
                hi = min(hi, int(np.searchsorted(created, max_cre, side="right")))
            idx = np.arange(lo, max(lo, hi), dtype=np.int64)
            mask = np.ones(len(idx), dtype=bool)
            if min_mod is not None:
                mask &= modified[idx] >= min_mod
            if max_mod is not None:
                mask &= modified[idx] <= max_mod
            if status is not None:
                mask &= d.o_status[idx] == status
            if customer is not None:
                mask &= d.o_customer[idx] == customer
            if channel is not None and channel != 1:
                mask &= False
            idx = idx[mask]
            if sort and field != "id":
                col = {
                    "customer_id": d.o_customer,
                    "date_created": created,
                    "date_modified": modified,
                    "status_id": d.o_status,
                }[field][idx]
                idx = idx[np.lexsort((idx, -col if desc else col))]
            elif sort and desc:
                idx = idx[::-1]
            return idx + 1

        return self._cached(key, build)

    def _consignment_mode(self, query: dict[str, str]) -> str | None:
        include = {p.strip() for p in query.get("include", "").split(",") if p.strip()}
        if not include & {"consignments", "consignments.line_items"}:
            return None
        if query.get("consignment_structure") != "object":
            return "link"
        return "object+line_items" if "consignments.line_items" in include else "object"

    def _h_orders(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        limit = self._limit(query, True, V2_MAX_LIMIT)
        page = self._page(query, True)
        ordered = self._order_ids(query)
        start = (page - 1) * limit
        chunk = ordered[start : start + limit]
        if len(chunk) == 0:
            return _Reply(204)  # the live API's way of saying "no (more) rows"
        mode = self._consignment_mode(query)
        fees = "fees" in query.get("include", "").split(",")
        body = [
            self.data.order_record(
                int(oid), api_base=self.api_path, consignments=mode, include_fees=fees
            )
            for oid in chunk
        ]
        self._bump_during_paging(ordered, start, start + len(chunk), limit, "orders")
        return _Reply(200, body)

    def _h_count(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        ids = self._order_ids(query, sort=False)
        return _Reply(200, {"statuses": self.data.status_counts(ids), "count": len(ids)})

    def _h_order(self, handler: SandboxHandler, query: dict[str, str], oid: str) -> _Reply:
        n = int(oid)
        if not 1 <= n <= self.data.n_orders:
            return _Reply(404, self._error(404, True, "The requested resource was not found."))
        mode = self._consignment_mode(query)
        fees = "fees" in query.get("include", "").split(",")
        record = self.data.order_record(
            n, api_base=self.api_path, consignments=mode, include_fees=fees
        )
        return _Reply(200, record)

    def _h_order_products(self, handler: SandboxHandler, query: dict[str, str], oid: str) -> _Reply:
        n = int(oid)
        if not 1 <= n <= self.data.n_orders:
            return _Reply(404, self._error(404, True, "The requested resource was not found."))
        limit = self._limit(query, True, V2_MAX_LIMIT)
        page = self._page(query, True)
        items = self.data.order_products(n)[(page - 1) * limit : page * limit]
        return _Reply(200, items) if items else _Reply(204)

    # -- v3 customers --------------------------------------------------------------------

    def _v3_ts(self, query: dict[str, str], name: str, *, date_only_now: bool) -> float | None:
        raw = query.get(name)
        if raw is None or raw == "":
            return None
        try:
            if _is_date_only(raw) and date_only_now:
                # The catalog appends the request's current time to a date-only value.
                now = datetime.fromtimestamp(self.now_ts(), UTC)
                day = datetime.fromisoformat(raw.strip()).date()
                return datetime.combine(
                    day, dtime(now.hour, now.minute, now.second), UTC
                ).timestamp()
            return _parse_dt(raw).timestamp()
        except ValueError:
            raise _BadRequest(422, False, f"The filter '{name}' is invalid.", {name: raw}) from None

    def _csv(self, query: dict[str, str], name: str) -> list[str] | None:
        raw = query.get(name)
        if raw is None:
            return None
        return [p.strip() for p in raw.split(",") if p.strip()]

    def _csv_ints(self, query: dict[str, str], name: str) -> list[int] | None:
        values = self._csv(query, name)
        if values is None:
            return None
        try:
            return [int(v) for v in values]
        except ValueError:
            raise _BadRequest(422, False, f"The filter '{name}' is invalid.") from None

    def _customer_sort_key(self, field: str) -> np.ndarray:
        d = self.data
        if field == "date_created":
            return d.c_created
        if field == "date_modified":
            return d.c_modified
        return d.last_name_rank()

    def _customer_ids(self, query: dict[str, str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Matching ids in order, plus the sort key per returned id (None for id order)."""
        d = self.data
        filters = {
            name: self._v3_ts(query, name, date_only_now=False)
            for name in (
                "date_created",
                "date_created:min",
                "date_created:max",
                "date_modified",
                "date_modified:min",
                "date_modified:max",
            )
        }
        id_in = self._csv_ints(query, "id:in")
        email_in = self._csv(query, "email:in")
        phone_in = self._csv(query, "phone:in")
        sort = query.get("sort") or ""
        field, _, direction = sort.partition(":")
        if sort and field not in ("date_created", "last_name", "date_modified"):
            raise _BadRequest(422, False, "The filter 'sort' is invalid.", {"sort": sort})
        desc = direction == "desc"
        key = ("customers", tuple(filters.items()), tuple(id_in or ()), tuple(email_in or ()))
        key += (tuple(phone_in or ()), id_in is None, email_in is None, phone_in is None)
        key += (field, desc)

        def build() -> np.ndarray:
            with d.lock:
                created, modified = d.c_created.copy(), d.c_modified.copy()
            n = len(created)
            mask = np.ones(n, dtype=bool)
            for name, ts in filters.items():
                if ts is None:
                    continue
                col = created if name.startswith("date_created") else modified
                if name.endswith(":min"):
                    mask &= col >= ts
                elif name.endswith(":max"):
                    mask &= col <= ts
                else:  # exact day match for the bare filter
                    mask &= (col >= ts) & (col < ts + 86_400)
            for wanted in (id_in, email_in, phone_in):
                if wanted is None:
                    continue
                keep = np.zeros(n, dtype=bool)
                if wanted is id_in:
                    ids = [i for i in id_in if 1 <= i <= n]
                elif wanted is email_in:
                    found = (d.find_customer_by_email(e) for e in email_in)
                    ids = [i for i in found if i is not None]
                else:
                    ids = [i for p in phone_in for i in d.find_customers_by_phone(p)]
                keep[np.array(ids, dtype=np.int64) - 1] = True
                mask &= keep
            idx = np.nonzero(mask)[0].astype(np.int64)
            if field:
                col = self._customer_sort_key(field)[idx]
                idx = idx[np.lexsort((idx, -col if desc else col))]
            return idx + 1

        ids = self._cached(key, build)
        if not field:
            return ids, None
        col = self._customer_sort_key(field)[ids - 1]
        return ids, (-col if desc else col)

    def _h_customers(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        include = {p.strip() for p in query.get("include", "").split(",")}
        with_addresses = "addresses" in include
        ids, sort_key = self._customer_ids(query)
        after, before = query.get("after"), query.get("before")
        if after or before:
            chunk, meta = self._cursor_page(query, ids, sort_key, after, before)
            start = end = 0
        else:
            chunk, meta = self._v3_page(query, ids)
            limit = meta["pagination"]["per_page"]
            page = meta["pagination"]["current_page"]
            start, end = (page - 1) * limit, (page - 1) * limit + len(chunk)
            if page == 1:
                # First page carries both kinds of pagination (spec: _metaCollection...).
                meta["cursor_pagination"] = self._cursor_meta(query, ids, sort_key, chunk, 0)
        data = [self._customer(int(c), with_addresses) for c in chunk]
        if not (after or before):
            self._bump_during_paging(ids, start, end, len(chunk) or 1, "customers")
        return _Reply(200, {"data": data, "meta": meta})

    def _cursor_of(self, cid: int, sort_key: np.ndarray | None, pos: int) -> str:
        if sort_key is None:
            return _b64({"id": cid})
        return _b64({"id": cid, "k": int(sort_key[pos])})

    def _cursor_meta(
        self,
        query: dict[str, str],
        ids: np.ndarray,
        sort_key: np.ndarray | None,
        chunk: np.ndarray,
        first_pos: int,
    ) -> dict[str, Any]:
        limit = self._limit(query, False, V3_MAX_LIMIT)
        meta: dict[str, Any] = {"count": len(chunk), "per_page": limit, "links": {}}
        if len(chunk):
            last_pos = first_pos + len(chunk) - 1
            meta["start_cursor"] = self._cursor_of(int(chunk[0]), sort_key, first_pos)
            meta["end_cursor"] = self._cursor_of(int(chunk[-1]), sort_key, last_pos)
            if first_pos > 0:
                meta["links"]["previous"] = f"?before={meta['start_cursor']}&limit={limit}"
            if last_pos < len(ids) - 1:
                meta["links"]["next"] = f"?after={meta['end_cursor']}&limit={limit}"
        return meta

    def _cursor_page(
        self,
        query: dict[str, str],
        ids: np.ndarray,
        sort_key: np.ndarray | None,
        after: str | None,
        before: str | None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Keyset paging: the cursor holds (sort key, id), so rows that change while a client
        pages can neither be skipped nor served twice, unlike ``page=`` offsets."""
        limit = self._limit(query, False, V3_MAX_LIMIT)
        try:
            cursor = _unb64(after or before or "")
            cid = int(cursor["id"])
            k = cursor.get("k")
        except (ValueError, KeyError, TypeError):
            raise _BadRequest(422, False, "The cursor is invalid.") from None
        keys = ids if sort_key is None else sort_key
        ref = cid if sort_key is None or k is None else int(k)
        # Rows are ordered by (key, id); find the cursor's place among rows with an equal key.
        lo = int(np.searchsorted(keys, ref, side="left"))
        hi = int(np.searchsorted(keys, ref, side="right"))
        tie_ids = ids[lo:hi]
        if after:
            first = lo + int(np.searchsorted(tie_ids, cid, side="right"))
            chunk = ids[first : first + limit]
        else:
            stop = lo + int(np.searchsorted(tie_ids, cid, side="left"))
            first = max(0, stop - limit)
            chunk = ids[first:stop]
        return chunk, {"cursor_pagination": self._cursor_meta(query, ids, sort_key, chunk, first)}

    def _h_create_customers(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        try:
            records = json.loads(handler.body or b"null")
        except ValueError:
            raise _BadRequest(400, False, "The request body is not valid JSON.") from None
        if not isinstance(records, list):
            raise _BadRequest(422, False, "The request body must be an array of customers.")
        if len(records) > MAX_CREATE_BATCH:
            raise _BadRequest(
                413,
                False,
                "The request payload is too large. The maximum items allowed in the array is 10.",
            )
        errors: dict[str, str] = {}
        seen: set[str] = set()
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                errors[f"{i}"] = "error.type.object"
                continue
            for name in ("email", "first_name", "last_name"):
                value = rec.get(name)
                if not isinstance(value, str) or not value.strip():
                    errors[f"{i}.{name}"] = "error.path.missing"
            email = rec.get("email")
            if isinstance(email, str) and email.strip():
                key = email.strip().lower()
                if "@" not in key or len(key) < 3:
                    errors[f"{i}.email"] = "error.format.email"
                elif key in seen or self.data.find_customer_by_email(key) is not None:
                    errors[f"{i}.email"] = f"The email address {email} is already in use."
                seen.add(key)
            for k, addr in enumerate(rec.get("addresses") or []):
                for name in ("first_name", "last_name", "address1", "city", "country_code"):
                    if not isinstance(addr, dict) or not addr.get(name):
                        errors[f"{i}.addresses.{k}.{name}"] = "error.path.missing"
        if errors:
            # All-or-nothing: a batch with one bad record creates none.
            raise _BadRequest(422, False, "JSON data is missing or invalid", errors)
        ts = self.now_ts()
        created = []
        for rec in records:
            created.append(self.data.create_customer(rec, ts))
        self._count("customers_created", n=len(created))
        return _Reply(200, {"data": created, "meta": {}})

    # -- v3 catalog, inventory, locations ------------------------------------------------

    def _h_products(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        d = self.data
        include = {p.strip() for p in query.get("include", "").split(",")}
        lo_ts = self._v3_ts(query, "date_modified:min", date_only_now=True)
        hi_ts = self._v3_ts(query, "date_modified:max", date_only_now=True)
        id_in = self._csv_ints(query, "id:in")
        one_id = self._csv_ints(query, "id")
        sku = query.get("sku")
        sort = query.get("sort") or "id"
        desc = (query.get("direction") or "asc").lower() == "desc"
        mask = np.ones(d.n_products, dtype=bool)
        if lo_ts is not None:
            mask &= d.p_modified >= lo_ts
        if hi_ts is not None:
            mask &= d.p_modified <= hi_ts
        for wanted in (id_in, one_id):
            if wanted is not None:
                keep = np.zeros(d.n_products, dtype=bool)
                valid = [i - 1 for i in wanted if 1 <= i <= d.n_products]
                keep[valid] = True
                mask &= keep
        idx = np.nonzero(mask)[0]
        if sku:
            idx = np.array([i for i in idx if d.product_sku(int(i) + 1) == sku], dtype=np.int64)
        if sort in ("name", "sku"):
            fn = d.product_name if sort == "name" else d.product_sku
            ordered = sorted(idx.tolist(), key=lambda i: (fn(i + 1), i), reverse=desc)
            idx = np.array(ordered, dtype=np.int64)
        elif sort in ("price", "calculated_price", "date_modified", "inventory_level"):
            col = {
                "price": d.p_price_cents,
                "calculated_price": d.p_price_cents,
                "date_modified": d.p_modified,
            }.get(sort)
            if col is None:
                per_product = d.inv_onhand.sum(axis=1)
                col = np.add.reduceat(per_product, (d.p_var_base[:-1] - 1).astype(np.int64))
            vals = col[idx]
            idx = idx[np.lexsort((idx, -vals if desc else vals))]
        elif desc:
            idx = idx[::-1]
        chunk, meta = self._v3_page(query, idx.astype(np.int64) + 1)
        data = [d.product_record(int(p), include_variants="variants" in include) for p in chunk]
        return _Reply(200, {"data": data, "meta": meta})

    def _h_inventory(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        d = self.data
        vids = np.arange(1, d.n_variants + 1, dtype=np.int64)
        sku_in = self._csv(query, "sku:in")
        variant_in = self._csv_ints(query, "variant_id:in")
        product_in = self._csv_ints(query, "product_id:in")
        location_in = self._csv_ints(query, "location_id:in")
        code_in = self._csv(query, "location_code:in")
        if variant_in is not None:
            vids = vids[np.isin(vids, variant_in)]
        if product_in is not None:
            vids = vids[np.isin(d.v_product[vids - 1], product_in)]
        if sku_in is not None:
            wanted = set(sku_in)
            vids = np.array([v for v in vids if d.variant_sku(int(v)) in wanted], dtype=np.int64)
        lids = list(range(1, d.n_locations + 1))
        if location_in is not None:
            lids = [lid for lid in lids if lid in location_in]
        if code_in is not None:
            lids = [lid for lid in lids if f"BC-LOCATION-{lid}" in code_in]
        chunk, meta = self._v3_page(query, vids, INVENTORY_MAX_LIMIT)
        return _Reply(200, {"data": [d.inventory_item(int(v), lids) for v in chunk], "meta": meta})

    def _h_locs(self, handler: SandboxHandler, query: dict[str, str]) -> _Reply:
        d = self.data
        lids = np.arange(1, d.n_locations + 1, dtype=np.int64)
        location_in = self._csv_ints(query, "location_id:in")
        code_in = self._csv(query, "location_code:in")
        if location_in is not None:
            lids = lids[np.isin(lids, location_in)]
        if code_in is not None:
            lids = np.array([i for i in lids if f"BC-LOCATION-{i}" in code_in], dtype=np.int64)
        if query.get("is_active", "").lower() == "false":
            lids = lids[:0]
        chunk, meta = self._v3_page(query, lids, INVENTORY_MAX_LIMIT)
        return _Reply(200, {"data": [d.location_record(int(i)) for i in chunk], "meta": meta})


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


# The loopback server lives in sandbox.common (shared with the Webjoint sandbox).


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aiq_sync.sandbox.bigcommerce",
        description="Serve a fake BigCommerce store on loopback until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--store-hash", default="sandbox1")
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=3_000)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--locations", type=int, default=3)
    parser.add_argument("--items-per-order", type=float, default=3.0)
    parser.add_argument("--history-days", type=int, default=730, help="days of order history")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--token", default="sandbox-token")
    parser.add_argument(
        "--scopes",
        default=",".join(sorted(ALL_SCOPES)),
        help="comma-separated scope names granted to the token",
    )
    parser.add_argument("--quota", type=int, default=150, help="requests per window")
    parser.add_argument("--window-ms", type=int, default=30_000)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--timezone", default="America/Chicago")
    parser.add_argument("--now", help="fixed current time, ISO-8601 (default: wall clock)")
    parser.add_argument(
        "--chaos", default="", help="e.g. server_error=0.05,truncated_json=2,slow_seconds=1.5"
    )
    args = parser.parse_args(argv)
    now = _parse_dt(args.now) if args.now else None
    sandbox = BigCommerceSandbox(
        store_hash=args.store_hash,
        orders=args.orders,
        customers=args.customers,
        products=args.products,
        locations=args.locations,
        items_per_order=args.items_per_order,
        history_days=args.history_days,
        seed=args.seed,
        token=args.token,
        scopes=frozenset(s.strip() for s in args.scopes.split(",") if s.strip()),
        quota=args.quota,
        window_ms=args.window_ms,
        time_scale=args.time_scale,
        chaos=Chaos.parse(args.chaos),
        now=now,
        timezone=args.timezone,
        host=args.host,
        port=args.port,
    )
    api_path = sandbox.start()
    print(f"BigCommerce sandbox serving at {api_path}", flush=True)
    print(f"X-Auth-Token: {args.token}    (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        print(json.dumps(sandbox.counters(), indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""BigCommerce entities -> pages of raw records (aiq_sync.extract contract).

Every list request is valid against the official specs and uses `limit=250` (the maximum).

- orders: `GET /v2/orders?min_date_modified&max_date_modified&sort=date_modified:asc
  &include=consignments.line_items&consignment_structure=object`: line items come embedded in
  the consignments of the same answer, so there is no request per order. The live API embeds
  at most 50 items per consignment (and says so in `__warning__`); such rare orders, and any
  whose embedded quantities do not add up to `items_total`, are completed from
  `GET /v2/orders/{id}/products` and the items stored under `_line_items` in the payload.
- orders and products page with a *time keyset*: each request asks for rows modified at or
  after the last row seen, sorted by `date_modified` (page numbers only within a run of equal
  timestamps). A row modified while we page moves to the end and is served again, never
  skipped as with `page=N` offsets; rows already served at the cursor's second are dropped.
  Paging stops on 204, an empty page or a short page, and stops hard (PagingError) if a page
  repeats the previous one.
- a long order window is cut into up to `max_concurrency` time slices paged concurrently (the
  quota allows ~5 requests/s and a 250-order page takes longer than that to build), then one
  tail pass re-reads what changed since the extraction began (server clock, `GET /v2/time`).
- customers page with the API's own cursor (`after=meta.cursor_pagination.end_cursor`).
- inventory (items + locations) and store are snapshots: no time filter.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiq_sync.config import BigCommerceSource
from aiq_sync.extract import EntitySpec, RawRecord, Window
from aiq_sync.http import ApiClient, ApiResponse
from connectors.bigcommerce.client import PAGE_LIMIT, open_client
from connectors.bigcommerce.models import parse_rfc2822
from connectors.bigcommerce.normalise import ITEM_PREFIX, LOCATION_PREFIX

log = logging.getLogger("aiq_sync.connectors.bigcommerce")

ORDER_INCLUDE = {"include": "consignments.line_items", "consignment_structure": "object"}
# Cut a window into slices only when each gets at least this many pages.
PAGES_PER_SLICE = 8
# Key the live API adds to a consignment whose line items it cut at 50.
WARNING = "__warning__"
# The tail pass starts this long before the server's clock at the start of the extraction.
TAIL_MARGIN = timedelta(seconds=5)


class PagingError(RuntimeError):
    """The API served a page that does not advance (it would page forever)."""


# ------------------------------------------------------------------------------ time formats


def iso_z(moment: datetime) -> str:
    """`2024-05-14T09:34:00Z`: orders and customers filters (whole seconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_offset(moment: datetime) -> str:
    """`2024-05-14T09:34:00+00:00`: catalog filters, always with a time part (a date alone
    gets the server's current time appended)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_v2_date(value: Any) -> datetime | None:
    try:
        return parse_rfc2822(value)
    except ValueError:
        return None


def inclusive_bounds(window: Window) -> tuple[datetime, datetime]:
    """[start, end) -> whole-second [min, max] for filters that are inclusive at both ends."""
    start = window.start.astimezone(UTC).replace(microsecond=0)
    end = window.end.astimezone(UTC)
    if end.microsecond:
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return start, end - timedelta(seconds=1)


# ---------------------------------------------------------------------------- keyset paging


@dataclass(frozen=True)
class Keyset:
    """How to page one endpoint by `date_modified`."""

    path: str
    params: dict[str, Any]
    min_param: str
    max_param: str
    fmt: Callable[[datetime], str]
    modified: Callable[[dict[str, Any]], datetime | None]
    rows: Callable[[ApiResponse], list[dict[str, Any]]]


Row = tuple[dict[str, Any], datetime | None]


def keyset_pages(
    client: ApiClient,
    spec: Keyset,
    start: datetime,
    end: datetime,
    *,
    skip: Callable[[Row], bool] = lambda _row: False,
) -> Iterator[list[Row]]:
    """Pages of (row, modified) with start <= modified <= end, each row once per version."""
    cursor, page = start, 1
    at_cursor: set[Any] = set()  # ids already served whose modified == cursor
    previous: list[Any] | None = None
    while True:
        params = {
            **spec.params,
            spec.min_param: spec.fmt(cursor),
            spec.max_param: spec.fmt(end),
            "limit": PAGE_LIMIT,
            "page": page,
        }
        rows = spec.rows(client.get_json(spec.path, params))
        if not rows:  # 204 or []
            return
        ids = [row.get("id") for row in rows]
        if ids == previous:
            raise PagingError(
                f"GET {spec.path}: page {page} from {spec.fmt(cursor)} repeats the previous "
                f"page ({len(ids)} rows); stopping instead of paging forever"
            )
        previous = ids
        stamped = [(row, spec.modified(row)) for row in rows]
        fresh = [
            (row, mod)
            for row, mod in stamped
            if not (mod == cursor and row.get("id") in at_cursor) and not skip((row, mod))
        ]
        if fresh:
            yield fresh
        if len(rows) < PAGE_LIMIT:
            return
        last = max((mod for _, mod in stamped if mod is not None), default=cursor)
        same = {row.get("id") for row, mod in stamped if mod == last}
        if last > cursor:
            # Next: rows modified at or after `last`. If the whole page shares `last`, page 1
            # from there is this very page: go straight to page 2.
            cursor, at_cursor = last, same
            page = 2 if len(same) == len(rows) else 1
        else:
            at_cursor |= same
            page += 1


def interleave(producers: list[Callable[[], Iterator[Any]]], workers: int) -> Iterator[Any]:
    """Run each producer on its own thread and yield their items as they come (bounded
    buffer). The first error stops the others and is re-raised here."""
    if len(producers) == 1:
        yield from producers[0]()
        return
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2 * len(producers))
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(producer: Callable[[], Iterator[Any]]) -> None:
        try:
            for item in producer():
                if not put("item", item):
                    return
        except BaseException as exc:
            put("error", exc)
        finally:
            put("done", None)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bc-slice") as pool:
        for producer in producers:
            pool.submit(run, producer)
        running = len(producers)
        try:
            while running:
                kind, value = items.get()
                if kind == "done":
                    running -= 1
                elif kind == "error":
                    raise value
                else:
                    yield value
        finally:
            stop.set()


# ------------------------------------------------------------------------------- extractors


@dataclass
class _Base:
    client: ApiClient
    source: BigCommerceSource
    extra: dict[str, Any] = field(default_factory=dict)

    def request_stats(self) -> dict[str, Any]:
        return {**self.client.stats.as_dict(), **self.extra}


def _v2_rows(response: ApiResponse) -> list[dict[str, Any]]:
    return response.json if isinstance(response.json, list) else []


def _v3_rows(response: ApiResponse) -> list[dict[str, Any]]:
    body = response.json if isinstance(response.json, dict) else {}
    data = body.get("data")
    return data if isinstance(data, list) else []


class OrdersExtractor(_Base):
    entity = "orders"
    snapshot = False

    def keyset(self) -> Keyset:
        return Keyset(
            path="v2/orders",
            params={"sort": "date_modified:asc", **ORDER_INCLUDE},
            min_param="min_date_modified",
            max_param="max_date_modified",
            fmt=iso_z,
            modified=lambda row: parse_v2_date(row.get("date_modified")),
            rows=_v2_rows,
        )

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        assert window is not None, "orders are extracted by time window"
        start, end = inclusive_bounds(window)
        filters = {"min_date_modified": iso_z(start), "max_date_modified": iso_z(end)}
        # One cheap request first (it also tells the shared limiter where the quota stands
        # before requests fan out): how many orders, hence how many slices.
        counted = self.client.get_json("v2/orders/count", filters).json or {}
        total = int(counted.get("count") or 0) if isinstance(counted, dict) else 0
        self.extra.update(orders_counted=total, line_item_fallbacks=0, slices=0)
        if total == 0:
            return
        pages = math.ceil(total / PAGE_LIMIT)
        slices = max(1, min(self.source.max_concurrency, pages // PAGES_PER_SLICE))
        self.extra["slices"] = slices
        spec = self.keyset()
        if slices == 1:
            for page in keyset_pages(self.client, spec, start, end):
                yield self._records(page)
            return
        server_now = self._server_time()
        tail_from = max(start, server_now - TAIL_MARGIN)
        recent: set[tuple[Any, datetime | None]] = set()
        lock = threading.Lock()

        def remember(page: list[Row]) -> list[Row]:
            with lock:
                recent.update((r.get("id"), m) for r, m in page if m is not None and m >= tail_from)
            return page

        bounds = _split(start, end, slices)

        def producer(lo: datetime, hi: datetime) -> Callable[[], Iterator[list[Row]]]:
            return lambda: (remember(p) for p in keyset_pages(self.client, spec, lo, hi))

        producers = [producer(lo, hi) for lo, hi in bounds]
        for page in interleave(producers, slices):
            yield self._records(page)
        if end >= tail_from:
            # Rows modified while the slices ran may have moved into a slice already done.
            with lock:
                seen = set(recent)

            def served(row: Row) -> bool:
                return (row[0].get("id"), row[1]) in seen

            for page in keyset_pages(self.client, spec, tail_from, end, skip=served):
                yield self._records(page)

    def _server_time(self) -> datetime:
        body = self.client.get_json("v2/time").json or {}
        try:
            return datetime.fromtimestamp(int(body["time"]), UTC)
        except (KeyError, TypeError, ValueError):
            return datetime.now(UTC)

    def _records(self, page: list[Row]) -> list[RawRecord]:
        out = []
        for order, modified in page:
            if _needs_line_items(order):
                order = {**order, "_line_items": self._order_products(order["id"])}
                self.extra["line_item_fallbacks"] = self.extra.get("line_item_fallbacks", 0) + 1
            out.append(RawRecord(str(order.get("id")), modified, order))
        return out

    def _order_products(self, order_id: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            rows = _v2_rows(
                self.client.get_json(
                    f"v2/orders/{int(order_id)}/products", {"limit": PAGE_LIMIT, "page": page}
                )
            )
            items.extend(rows)
            if len(rows) < PAGE_LIMIT:
                return items
            page += 1


def _split(start: datetime, end: datetime, parts: int) -> list[tuple[datetime, datetime]]:
    """[start, end] (inclusive, whole seconds) into `parts` contiguous inclusive slices."""
    seconds = int((end - start).total_seconds()) + 1
    step = max(1, math.ceil(seconds / parts))
    out = []
    lo = start
    while lo <= end:
        hi = min(end, lo + timedelta(seconds=step - 1))
        out.append((lo, hi))
        lo = hi + timedelta(seconds=1)
    return out


def _needs_line_items(order: dict[str, Any]) -> bool:
    """Whether the embedded consignments may not hold every line item of the order."""
    consignments = order.get("consignments")
    if not isinstance(consignments, dict) or "pickups" not in consignments:
        return True  # not embedded (a resource link) or missing
    email = consignments.get("email")
    groups = [
        *(consignments.get("pickups") or ()),
        *(consignments.get("shipping") or ()),
        *(consignments.get("downloads") or ()),
        *((email.get("gift_certificates") or ()) if isinstance(email, dict) else ()),
    ]
    quantity = 0.0
    for group in groups:
        if not isinstance(group, dict) or WARNING in group:
            return True  # the API truncated this consignment's line items (max 50)
        items = group.get("line_items")
        if isinstance(items, list):
            for item in items:
                if not isinstance(item, dict) or "quantity" not in item:
                    return True  # a link instead of the item
                quantity += _number(item["quantity"])
        elif items:
            return True
    expected = order.get("items_total")
    return expected is not None and _number(expected) != quantity


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class CustomersExtractor(_Base):
    entity = "customers"
    snapshot = False

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        assert window is not None, "customers are extracted by time window"
        start, end = inclusive_bounds(window)
        params: dict[str, Any] = {
            "date_modified:min": iso_z(start),
            "date_modified:max": iso_z(end),
            "include": "addresses",
            "sort": "date_modified:asc",
            "limit": PAGE_LIMIT,
        }
        response = self.client.get_json("v3/customers", params)
        cursors: set[str] = set()
        page = 1
        while True:
            rows = _v3_rows(response)
            if rows:
                yield [
                    RawRecord(str(row.get("id")), parse_iso(row.get("date_modified")), row)
                    for row in rows
                ]
            if len(rows) < PAGE_LIMIT:
                return
            meta = (response.json or {}).get("meta") or {}
            cursor = meta.get("cursor_pagination") or {}
            after = cursor.get("end_cursor")
            if after:
                if not (cursor.get("links") or {}).get("next"):
                    return
                if after in cursors:
                    raise PagingError(
                        "GET v3/customers: the cursor repeats; stopping instead of paging forever"
                    )
                cursors.add(after)
                response = self.client.get_json("v3/customers", {**params, "after": after})
                continue
            # No cursor offered: fall back to page numbers.
            pagination = meta.get("pagination") or {}
            if page >= int(pagination.get("total_pages") or 0):
                return
            page += 1
            response = self.client.get_json("v3/customers", {**params, "page": page})


class ProductsExtractor(_Base):
    entity = "products"
    snapshot = False

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        assert window is not None, "products are extracted by time window"
        start, end = inclusive_bounds(window)
        spec = Keyset(
            path="v3/catalog/products",
            params={"include": "variants", "sort": "date_modified", "direction": "asc"},
            min_param="date_modified:min",
            max_param="date_modified:max",
            fmt=iso_offset,
            modified=lambda row: parse_iso(row.get("date_modified")),
            rows=_v3_rows,
        )
        for page in keyset_pages(self.client, spec, start, end):
            yield [RawRecord(str(row.get("id")), modified, row) for row, modified in page]


class InventoryExtractor(_Base):
    """Locations and inventory items of every location: one snapshot per run."""

    entity = "inventory"
    snapshot = True

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        for row in self._all("v3/inventory/locations"):
            yield [RawRecord(f"{LOCATION_PREFIX}{row.get('id')}", None, row)]
        page: list[RawRecord] = []
        for row in self._all("v3/inventory/items"):
            ident = row.get("identity") or {}
            page.append(RawRecord(f"{ITEM_PREFIX}{ident.get('variant_id')}", None, row))
            if len(page) >= PAGE_LIMIT:
                yield page
                page = []
        if page:
            yield page

    def _all(self, path: str) -> Iterator[dict[str, Any]]:
        """Every row of a v3 list: page 1, then the other pages concurrently."""
        first = self.client.get_json(path, {"limit": PAGE_LIMIT, "page": 1})
        rows = _v3_rows(first)
        yield from rows
        if len(rows) < PAGE_LIMIT:
            return
        meta = (first.json or {}).get("meta") or {}
        pages = int((meta.get("pagination") or {}).get("total_pages") or 1)
        fetch = lambda n: _v3_rows(  # noqa: E731
            self.client.get_json(path, {"limit": PAGE_LIMIT, "page": n})
        )
        for rows in self.client.imap_concurrent(fetch, range(2, pages + 1)):
            yield from rows


class StoreExtractor(_Base):
    entity = "store"
    snapshot = True

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        store = self.client.get_json("v2/store").json
        if isinstance(store, dict):
            yield [RawRecord(str(store.get("id") or self.source.store_hash), None, store)]


# ------------------------------------------------------------------------------- connector

ENTITIES = (
    EntitySpec("customers", description="Customers with their addresses, by date_modified."),
    EntitySpec(
        "orders",
        description="Orders with their line items (embedded consignments), by date_modified.",
    ),
    EntitySpec("products", description="Catalog products with their variants, by date_modified."),
    EntitySpec(
        "inventory",
        snapshot=True,
        description="Stock per variant and location, and the locations: a snapshot per run.",
    ),
    EntitySpec("store", snapshot=True, description="Store facts (time zone, currency, plan)."),
)


class BigCommerceConnector:
    source_type = "bigcommerce"
    entities = ENTITIES

    @contextmanager
    def open(self, source: BigCommerceSource, **client_options: Any) -> Iterator[dict[str, Any]]:
        client = open_client(source, **client_options)
        try:
            yield {
                extractor.entity: extractor
                for extractor in (
                    CustomersExtractor(client, source),
                    OrdersExtractor(client, source),
                    ProductsExtractor(client, source),
                    InventoryExtractor(client, source),
                    StoreExtractor(client, source),
                )
            }
        finally:
            client.close()

    def check(
        self, source: BigCommerceSource, *, timezone: str | None = None, **options: Any
    ) -> list[str]:
        from connectors.bigcommerce.check import check

        return check(source, timezone=timezone, **options)

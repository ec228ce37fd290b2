"""The Webjoint API connector: facility discovery and one extractor per entity.

One `ApiClient` per run (paced by a token bucket, bounded concurrency, retries with back-off)
is shared by every extractor of the run. Facilities are discovered once per run with
`GET facilities`: an empty `facility_ids` in the config means every facility the company has
today, so a new facility is picked up without a config change.

Orders and customers are windowed: the API's date filter is loose (older rows come back, rows
repeat), so each row is kept only when its own update time lies inside the window (which
already includes the look-back) and only the newest version of an id is passed on. What goes
on to landing is therefore a function of the window, not of how often it is pulled.
Products and packages form the inventory snapshot: one record per (facility, product).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiq_sync.config import WebjointSource
from aiq_sync.extract import EntitySpec, RawRecord, Window
from aiq_sync.http import ApiClient, ApiError, FixedRateLimiter, RetryPolicy
from connectors.webjoint import api
from connectors.webjoint.common import stamp
from connectors.webjoint.dedup import NewestById
from connectors.webjoint.models import parse_stamp
from connectors.webjoint.paging import PagingStats, interleave, pages

log = logging.getLogger("connectors.webjoint")

FACILITIES, ORDERS, CUSTOMERS, INVENTORY = "facilities", "orders", "customers", "inventory"
# Key the connector adds to each landed order: the facility it was listed under.
FACILITY_KEY = "_facility"


class WebjointSetupError(Exception):
    """The source cannot be called (e.g. its API key variable is not set). Names, no values."""


@dataclass(frozen=True)
class FacilityRef:
    id: str
    name: str | None
    timezone: str | None

    def tag(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


def _first(payload: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = payload.get(name)
        if value not in (None, ""):
            return value
    return None


def record_time(payload: dict[str, Any], *fields: tuple[str, ...]) -> datetime | None:
    """The first parseable time among the field groups (None: the record has no usable time;
    it still lands, and the normaliser quarantines it with the reason)."""
    for names in fields:
        try:
            moment = parse_stamp(_first(payload, names))
        except ValueError:
            continue
        if moment is not None:
            return moment
    return None


def _zone(facility: dict[str, Any]) -> str | None:
    """The facility's IANA time zone, if it gives a valid one."""
    name = facility.get("timezone") or facility.get("timeZone")
    if not isinstance(name, str) or not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()


class Session:
    """What one run's extractors share: the client, the facilities, the counters."""

    def __init__(self, source: WebjointSource, client: ApiClient, page_size: int) -> None:
        self.source = source
        self.client = client
        self.page_size = page_size
        self.stats = PagingStats()
        self._lock = threading.Lock()
        self._facilities: list[FacilityRef] | None = None
        self._raw_facilities: list[dict[str, Any]] = []

    @property
    def company(self) -> dict[str, Any]:
        return {api.COMPANY_PARAM: self.source.company_id}

    def listing(self, path: str, params: dict[str, Any], label: str) -> Iterator[list[dict]]:
        return pages(
            self.client,
            path,
            {**self.company, **params},
            label=label,
            stats=self.stats,
            page_size=self.page_size,
        )

    def discovered(self) -> list[dict[str, Any]]:
        self.facilities()
        return list(self._raw_facilities)

    def facilities(self) -> list[FacilityRef]:
        """The facilities to pull this run (discovered once, on first use)."""
        with self._lock:
            if self._facilities is None:
                self._facilities = self._discover()
            return list(self._facilities)

    def _discover(self) -> list[FacilityRef]:
        configured = [str(i) for i in self.source.facility_ids]
        try:
            raw = [row for page in self.listing(api.FACILITIES, {}, "facilities") for row in page]
        except ApiError as exc:
            if not configured or exc.status == 401:
                raise
            # Configured ids are enough to pull (the key may not be allowed to list
            # facilities); names and time zones are a nicety.
            log.warning("webjoint %s: facility discovery failed (%s)", self.source.name, exc)
            raw = []
        self._raw_facilities = raw
        known: dict[str, FacilityRef] = {}
        for row in raw:
            fid = row.get("id")
            if fid in (None, ""):
                continue  # lands as-is; the facilities normaliser quarantines it
            name = row.get("name")
            known[str(fid)] = FacilityRef(str(fid), str(name) if name else None, _zone(row))
        if not configured:
            chosen = sorted(known.values(), key=lambda f: (len(f.id), f.id))
        else:
            missing = [i for i in configured if i not in known]
            if raw and missing:
                log.warning(
                    "webjoint %s: configured facility id(s) %s not in GET facilities; "
                    "pulling them anyway",
                    self.source.name,
                    ", ".join(missing),
                )
            chosen = [known.get(i) or FacilityRef(i, None, None) for i in configured]
        log.info(
            "webjoint %s: %d facilities (%s)",
            self.source.name,
            len(chosen),
            "configured" if configured else "all discovered",
        )
        return chosen

    def zone(self, facility: FacilityRef | None) -> str | None:
        return (facility.timezone if facility else None) or self.source.timezone

    def request_stats(self) -> dict[str, Any]:
        stats = self.client.stats.as_dict()
        stats["paging"] = self.stats.as_dict()
        with self._lock:
            if self._facilities is not None:
                stats["facilities"] = [f.id for f in self._facilities]
        return stats


class _Extractor:
    entity: str
    snapshot: bool

    def __init__(self, session: Session) -> None:
        self.session = session

    def request_stats(self) -> dict[str, Any]:
        return self.session.request_stats()


class _Windowed(_Extractor):
    """Rows inside the window only, newest version per id, whatever the API sends.

    The whole listing pass is seen before anything is passed on (spooled to disk, see
    dedup.py), so the record that lands is always the newest copy listed, and it lands only
    if that newest copy's own update time is inside the window."""

    snapshot = False
    updated_fields: tuple[str, ...]
    created_fields: tuple[str, ...]
    BATCH = 1_000

    def _pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        raise NotImplementedError

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        assert window is not None, f"{self.entity} are extracted by window"
        with NewestById() as newest:
            for page in self._pages(window):
                for row in page:
                    rid = row.get("id")
                    moment = record_time(row, self.updated_fields, self.created_fields)
                    version = (stamp(moment), _digest(row))
                    newest.add(None if rid in (None, "") else str(rid), version, moment, row)
            kept: list[RawRecord] = []
            outside = 0
            for rid, moment, row in newest:
                if moment is not None and not window.contains(moment):
                    outside += 1
                    continue
                kept.append(RawRecord(rid or "", moment, row))  # no id: quarantined later
                if len(kept) >= self.BATCH:
                    yield kept
                    kept = []
            if kept:
                yield kept
            self.session.stats.add(
                rows_kept=newest.rows - newest.duplicates - outside,
                rows_outside_window=outside,
                duplicates_dropped=newest.duplicates,
            )


class OrdersExtractor(_Windowed):
    entity = ORDERS
    updated_fields = api.ORDER_UPDATED_FIELDS
    created_fields = api.ORDER_COMPLETED_FIELDS + api.ORDER_CREATED_FIELDS

    def _pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        session = self.session

        def listing(facility: FacilityRef):
            def produce() -> Iterator[tuple[FacilityRef, list[dict]]]:
                params = {
                    api.FACILITY_PARAM: facility.id,
                    **api.date_params(window, session.zone(facility)),
                }
                label = f"orders of facility {facility.id}"
                for page in session.listing(api.ORDERS, params, label):
                    yield facility, page

            return produce

        # Ids are unique per company (A10): one de-duplication across facilities.
        producers = [listing(f) for f in session.facilities()]
        for facility, page in interleave(producers, session.client.max_concurrency):
            yield [{**row, FACILITY_KEY: facility.tag()} for row in page]


class CustomersExtractor(_Windowed):
    entity = CUSTOMERS
    updated_fields = api.CUSTOMER_UPDATED_FIELDS
    created_fields = api.CUSTOMER_CREATED_FIELDS

    def _pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        params = api.date_params(window, self.session.source.timezone)
        yield from self.session.listing(api.CUSTOMERS, params, "customers")


class FacilitiesExtractor(_Extractor):
    entity = FACILITIES
    snapshot = True

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        rows = self.session.discovered()
        yield [RawRecord(str(r.get("id") or ""), None, r) for r in rows]


class InventoryExtractor(_Extractor):
    """One record per (facility, product): the product with its variants and every package
    (stock per room) of those variants at the facility."""

    entity = INVENTORY
    snapshot = True

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        session = self.session

        def of(facility: FacilityRef):
            def produce() -> Iterator[list[RawRecord]]:
                yield from self._facility(facility)

            return produce

        producers = [of(f) for f in session.facilities()]
        yield from interleave(producers, session.client.max_concurrency)

    def _facility(self, facility: FacilityRef) -> Iterator[list[RawRecord]]:
        session = self.session
        params = {api.FACILITY_PARAM: facility.id}
        where = f"of facility {facility.id}"
        products: dict[str, dict[str, Any]] = {}
        for page in session.listing(api.PRODUCTS, params, f"products {where}"):
            for row in page:
                products[str(row.get("id"))] = row  # a repeated product: the later copy
        packages: dict[str, list[dict[str, Any]]] = {}
        seen_packages: set[str] = set()
        for page in session.listing(api.PACKAGES, params, f"packages {where}"):
            for row in page:
                pid = row.get("id")
                if pid not in (None, ""):
                    if str(pid) in seen_packages:
                        continue
                    seen_packages.add(str(pid))
                packages.setdefault(str(row.get("productId")), []).append(row)
        batch: list[RawRecord] = []
        tag = facility.tag()
        for product_id, product in products.items():
            sellable = {product_id}
            for variant in _variants(product):
                if isinstance(variant, dict) and variant.get("productId") not in (None, ""):
                    sellable.add(str(variant["productId"]))
            mine = [p for key in sorted(sellable) for p in packages.pop(key, [])]
            record = {"facility": tag, "product": product, "packages": mine}
            batch.append(RawRecord(f"{facility.id}:{product_id}", None, record))
        for product_id, rows in sorted(packages.items()):  # stock of products not listed
            record = {"facility": tag, "product": None, "product_id": product_id, "packages": rows}
            batch.append(RawRecord(f"{facility.id}:{product_id}", None, record))
        session.stats.add(rows_kept=len(batch))
        for start in range(0, len(batch), 1000):
            yield batch[start : start + 1000]


def _variants(product: dict[str, Any]) -> list[Any]:
    for name in api.VARIANT_FIELDS:
        value = product.get(name)
        if isinstance(value, list):
            return value
    return []


class WebjointConnector:
    """`API_CONNECTORS["webjoint"]`. Pacing and page size are attributes so a test (or a
    verified vendor limit) can change them without touching the source config."""

    source_type = "webjoint"
    entities = (
        EntitySpec(FACILITIES, snapshot=True, description="Facilities of the company, each run"),
        EntitySpec(ORDERS, description="Orders per facility with line items, by update day"),
        EntitySpec(CUSTOMERS, description="Customers by update day"),
        EntitySpec(
            INVENTORY,
            snapshot=True,
            description="Products with variants and packages (stock per room), each run",
        ),
    )

    def __init__(
        self,
        *,
        requests_per_second: float = api.REQUESTS_PER_SECOND,
        burst: int = api.BURST,
        page_size: int = api.PAGE_SIZE,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.page_size = page_size
        self.retry = retry

    def client(self, source: WebjointSource) -> ApiClient:
        key = os.environ.get(source.api_key_env)
        if not key:
            raise WebjointSetupError(
                f"sources[{source.name}].api_key_env: environment variable "
                f"{source.api_key_env} is not set"
            )
        return ApiClient(
            source.base_url,
            headers=api.auth_headers(key),
            secret_values=[key],
            retry=self.retry,
            rate_limiter=FixedRateLimiter(self.requests_per_second, self.burst),
            max_concurrency=source.max_concurrency,
            name=f"webjoint:{source.name}",
        )

    @contextmanager
    def open(self, source: WebjointSource) -> Iterator[dict[str, Any]]:
        client = self.client(source)
        session = Session(source, client, self.page_size)
        try:
            yield {
                FACILITIES: FacilitiesExtractor(session),
                ORDERS: OrdersExtractor(session),
                CUSTOMERS: CustomersExtractor(session),
                INVENTORY: InventoryExtractor(session),
            }
        finally:
            client.close()

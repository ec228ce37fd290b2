"""A local fake of the Webjoint API (cannabis POS / e-commerce), served on loopback.

It implements the reconstructed API of ``connectors/webjoint/api.py`` (assumptions A1-A12 in
docs/webjoint.md) and the hazards the real one is known for:

- several facilities, discovered with ``GET facilities``; ``add_facility()`` opens one more
  between runs (its data is generated like the others');
- listings paged with ``range=[start,end]`` (inclusive, at most 500 rows an answer, 100 when
  absent), ending with an empty page;
- a LOOSE date filter: ``dateFrom``/``dateTo`` (UTC days, inclusive) on the last update, but
  rows up to ``loose_days`` before ``dateFrom`` come back too;
- duplicated rows: exact copies and stale copies (an older version of the same order), placed
  anywhere in the listing, different on every pass (each ``range=[0,..]`` starts one) but
  stable while a client pages;
- refunds both ways: an order whose status later becomes ``Refunded``/``Partially Refunded``
  (with ``refundAmount``), and ``Return`` orders with negative amounts naming
  ``originalOrderId``; some malformed orders (never duplicated, so quarantine counts are exact);
- products with variants and packages with stock per room;
- a per-key token bucket (429 ``OVER LIMIT``, ``Retry-After`` in seconds, fractions, or none)
  and the chaos modes of ``sandbox.common`` plus ``repeat_page`` (a listing ignores ``range``
  and serves its first page again).

Data is deterministic from the seed and generated lazily (numpy arrays per facility, bodies
from ``random.Random`` per record), so 30k orders cost a few arrays.

    with WebjointSandbox(facilities=3, orders=30_000) as sb:
        base_url = sb.base_url  # http://127.0.0.1:PORT/prod/api/
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import numpy as np

from aiq_sync.sandbox.bigcommerce_data import _person
from aiq_sync.sandbox.common import Chaos as _ChaosBase
from aiq_sync.sandbox.common import (
    ChaosState,
    Fault,
    SandboxClock,
    SandboxHandler,
    ServerThread,
    TokenBucket,
    handle_admin,
)

__all__ = ["Chaos", "Fault", "WebjointSandbox", "main"]

logger = logging.getLogger("aiq_sync.sandbox.webjoint")

DAY = 86_400
API_PREFIX = "/prod/api/"
AUTH_HEADER = "x-api-key"
DEFAULT_PAGE = 100
MAX_PAGE = 500
_HTML_BODY = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center></body></html>"
)

# Order statuses (codes in the arrays) and how often they occur.
STATUSES = ("Complete", "Cancelled", "Pending", "Voided", "Refunded", "Partially Refunded")
_STATUS_P = np.array([0.86, 0.04, 0.02, 0.02, 0.04, 0.02])
COMPLETE, REFUNDED, PARTIAL = 0, 4, 5
ORDER_TYPES = ("In-Store", "Pickup", "Delivery")
_TYPE_P = np.array([0.75, 0.15, 0.10])
SALE, RETURN = 0, 1
REAL, COPY, STALE = 0, 1, 2  # row variants in a listing

FACILITY_NAMES = (
    "Midtown", "Downtown", "Riverside", "Oak Park", "Elk Grove", "Land Park", "Natomas",
    "Arden", "Folsom", "Davis", "Roseville", "Rancho",
)  # fmt: skip
ROOMS = ("Sales Floor", "Vault", "Back Stock")
CATEGORIES = {
    "Flower": ("3.5g", "7g", "14g", "28g"),
    "Pre-Roll": ("1g", "5pk"),
    "Vape": ("0.5g", "1g"),
    "Edible": ("10pk 100mg", "20pk 100mg"),
    "Concentrate": ("1g",),
    "Tincture": ("30ml",),
    "Topical": ("2oz",),
}
BRANDS = ("Glass House", "Stiiizy", "Kiva", "Raw Garden", "Wyld", "Cookies", "Papa & Barkley")
STRAINS = ("Blue Dream", "OG Kush", "Sour Diesel", "Gelato", "Wedding Cake", "GSC", "Zkittlez")
LINEAGES = ("Indica", "Sativa", "Hybrid", "CBD")
TAX_BP = 1525  # 15.25 %: excise + sales tax, on the discounted price


def iso(ts: int | float) -> str:
    """``2025-03-10T18:22:05.000Z``, as a JavaScript back end writes it."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def dollars(cents: int) -> float:
    return round(cents / 100, 2)


def _stable_hash(*parts: Any) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _facility_name(index: int) -> str:
    base = FACILITY_NAMES[index % len(FACILITY_NAMES)]
    return base if index < len(FACILITY_NAMES) else f"{base} {index // len(FACILITY_NAMES) + 1}"


class Chaos(_ChaosBase):
    """Fault injection (see ``common.Chaos``) plus ``repeat_page``: a request for any page but
    the first gets the first page again (the server ignoring ``range``)."""

    repeat_page: Fault = Fault()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class _Facility:
    index: int
    id: int
    name: str
    timezone: str
    rooms: tuple[tuple[int, str], ...]
    created: np.ndarray  # per order, UTC seconds, ascending
    completed: np.ndarray
    updated: np.ndarray
    status: np.ndarray
    kind: np.ndarray
    original: np.ndarray  # index of the refunded order (returns), else -1
    order_type: np.ndarray
    customer: np.ndarray  # customer id, 0 = guest
    bad: np.ndarray  # 0 fine, 1 total is not a number, 2 a quantity is not a number
    listed: np.ndarray  # per product: does this facility list it

    def order_id(self, k: int) -> int:
        return (self.index + 1) * 10_000_000 + k + 1

    @property
    def n_orders(self) -> int:
        return len(self.created)


class CompanyData:
    """Every record of one fake company. Mutations (``add_facility``) bump ``version``."""

    def __init__(
        self,
        *,
        company_id: int,
        facilities: int,
        orders: int,
        customers: int,
        products: int,
        history_days: int,
        seed: int,
        now_ts: int,
        timezone: str,
        bad_share: float,
        return_share: float,
    ) -> None:
        self.company_id = company_id
        self.seed = seed
        self.now_ts = now_ts
        self.timezone = timezone
        self.history_days = max(1, history_days)
        self.bad_share = bad_share
        self.return_share = return_share
        self.lock = threading.RLock()
        self.version = 0
        rng = np.random.default_rng([seed, 1])
        end = now_ts - 60
        # Customers: ids grow with creation (up to 3 years back); a third edited later.
        nc = max(1, customers)
        self.c_created = np.sort(rng.integers(end - 3 * 365 * DAY, end, nc, dtype=np.int64))
        edited = rng.random(nc) < 0.3
        later = (rng.random(nc) * (end - self.c_created)).astype(np.int64)
        self.c_updated = self.c_created + np.where(edited, later, rng.integers(0, 600, nc))
        # Catalog: products with 1-3 variants (sellable product ids 900001...).
        npr = max(1, products)
        self.p_nvar = rng.choice([1, 2, 3], npr, p=[0.5, 0.3, 0.2]).astype(np.int64)
        self.p_var_base = np.concatenate([[0], np.cumsum(self.p_nvar)]).astype(np.int64)
        self.n_variants = int(self.p_nvar.sum())
        self.v_product = np.repeat(np.arange(npr, dtype=np.int64), self.p_nvar)
        self.v_price = rng.integers(10, 90, self.n_variants, dtype=np.int64) * 100 - 1  # $x.99
        self.p_updated = end - rng.integers(0, 400 * DAY, npr, dtype=np.int64)
        self._orders_per_facility = max(1, orders // max(1, facilities))
        self.facilities: list[_Facility] = []
        for i in range(max(1, facilities)):
            share = orders // max(1, facilities) + (1 if i < orders % max(1, facilities) else 0)
            self._add(share)

    # -- facilities ------------------------------------------------------------------------

    def add_facility(self, orders: int | None = None, name: str | None = None) -> _Facility:
        with self.lock:
            facility = self._add(self._orders_per_facility if orders is None else orders, name)
            self.version += 1
            return facility

    def _add(self, n: int, name: str | None = None) -> _Facility:
        index = len(self.facilities)
        rng = np.random.default_rng([self.seed, 100 + index])
        tz = ZoneInfo(self.timezone)
        end = self.now_ts - 60
        first_day = datetime.fromtimestamp(end, tz).date() - timedelta(days=self.history_days - 1)
        # Local midnights of the history days, then store hours 09:00-21:00 local.
        days = (first_day + timedelta(days=d) for d in range(self.history_days))
        midnights = np.array(
            [datetime.combine(d, datetime.min.time(), tz).timestamp() for d in days],
            dtype=np.int64,
        )
        day = rng.integers(0, self.history_days, n)
        created = np.sort(midnights[day] + rng.integers(9 * 3600, 21 * 3600, n))
        created = np.minimum(created, end - 3600)
        order_type = rng.choice(len(ORDER_TYPES), n, p=_TYPE_P).astype(np.int8)
        wait = np.where(order_type == 0, rng.integers(60, 900, n), rng.integers(1800, 5 * 3600, n))
        completed = np.minimum(created + wait, end)
        status = rng.choice(len(STATUSES), n, p=_STATUS_P).astype(np.int8)
        refunded = (status == REFUNDED) | (status == PARTIAL)
        refund_at = completed + rng.integers(3600, 10 * DAY, n)
        updated = np.where(refunded, np.minimum(refund_at, end), completed)
        # Returns: a later order refunding an earlier completed one of the same facility.
        kind = np.where(rng.random(n) < self.return_share, RETURN, SALE).astype(np.int8)
        original = np.full(n, -1, dtype=np.int64)
        for k in np.nonzero(kind == RETURN)[0]:
            candidates = np.nonzero((status[:k] == COMPLETE) & (kind[:k] == SALE))[0]
            if len(candidates) == 0:
                kind[k] = SALE
                continue
            original[k] = candidates[
                int(rng.integers(max(0, len(candidates) - 500), len(candidates)))
            ]
            status[k] = COMPLETE
            order_type[k] = 0
            updated[k] = completed[k]
        existing = np.searchsorted(self.c_created, created, side="right")
        pick = (rng.random(n) * np.maximum(existing, 1)).astype(np.int64) + 1
        guest = (rng.random(n) < 0.15) | (existing == 0)
        customer = np.where(guest, 0, pick)
        bad = np.zeros(n, dtype=np.int8)
        roll = rng.random(n)
        bad[roll < self.bad_share] = 1
        bad[roll < self.bad_share / 2] = 2
        listed = rng.random(len(self.p_nvar)) < 0.85
        fid = 51 + index
        rooms = tuple((fid * 100 + r + 1, ROOMS[r]) for r in range(2 + index % 2))
        facility = _Facility(
            index=index,
            id=fid,
            name=name or _facility_name(index),
            timezone=self.timezone,
            rooms=rooms,
            created=created,
            completed=completed,
            updated=updated,
            status=status,
            kind=kind,
            original=original,
            order_type=order_type,
            customer=customer,
            bad=bad,
            listed=listed,
        )
        self.facilities.append(facility)
        return facility

    def facility(self, fid: int) -> _Facility | None:
        with self.lock:
            for facility in self.facilities:
                if facility.id == fid:
                    return facility
        return None

    def facility_record(self, f: _Facility) -> dict[str, Any]:
        r = random.Random(f"{self.seed}:facility:{f.index}")
        return {
            "id": f.id,
            "companyId": self.company_id,
            "name": f.name,
            "licenseNumber": f"C10-{r.randint(1000000, 9999999):07d}-LIC",
            "timezone": f.timezone,
            "active": True,
            "address": {
                "street": f"{r.randint(100, 9999)} {r.choice(('J St', 'K St', 'Broadway'))}",
                "city": "Sacramento",
                "state": "CA",
                "zip": f"958{r.randint(10, 99)}",
            },
        }

    # -- customers -------------------------------------------------------------------------

    def customer_record(self, cid: int) -> dict[str, Any]:
        person = _person(self.seed, "customer", cid)
        r = random.Random(f"{self.seed}:customer:{cid}")
        age_days = r.randint(21 * 365 + 10, 75 * 365)
        birth = (datetime.fromtimestamp(self.now_ts, UTC) - timedelta(days=age_days)).date()
        return {
            "id": cid,
            "companyId": self.company_id,
            "firstName": person.first_name,
            "lastName": person.last_name,
            "email": person.email if r.random() > 0.08 else None,
            "phone": person.phone or None,
            "birthDate": birth.isoformat() if r.random() > 0.02 else "N/A",
            "address": {
                "street": person.street_1,
                "street2": person.street_2 or None,
                "city": person.city,
                "state": person.state_code,
                "zip": person.zip,
            },
            "medical": r.random() < 0.2,
            "loyaltyPoints": r.randint(0, 500),
            "dateCreated": iso(self.c_created[cid - 1]),
            "dateUpdated": iso(self.c_updated[cid - 1]),
        }

    def order_customer(self, cid: int) -> dict[str, Any]:
        person = _person(self.seed, "customer", cid)
        return {
            "id": cid,
            "firstName": person.first_name,
            "lastName": person.last_name,
            "email": person.email,
            "phone": person.phone or None,
        }

    # -- catalog ---------------------------------------------------------------------------

    def _product_words(self, p: int) -> tuple[str, str, str, str, str]:
        r = random.Random(f"{self.seed}:product:{p}")
        category = r.choice(list(CATEGORIES))
        strain = r.choice(STRAINS)
        brand = r.choice(BRANDS)
        lineage = r.choice(LINEAGES)
        name = f"{brand} {strain}" if category in ("Flower", "Pre-Roll") else f"{brand} {category}"
        return category, strain, brand, lineage, name

    def variant_product_id(self, v: int) -> int:
        return 900_001 + v

    def product_record(self, p: int) -> dict[str, Any]:
        category, strain, brand, lineage, name = self._product_words(p)
        units = CATEGORIES[category]
        variants = []
        for j, v in enumerate(range(self.p_var_base[p], self.p_var_base[p + 1])):
            pid = self.variant_product_id(v)
            variants.append(
                {
                    "productId": pid,
                    "sku": f"WJ-{pid}" if v % 9 else None,  # some variants have no sku
                    "unit": units[j % len(units)],
                    "price": dollars(int(self.v_price[v])),
                }
            )
        return {
            "id": 5_001 + p,
            "name": name,
            "type": category,
            "lineage": lineage,
            "brand": {"name": brand},
            "strain": {"name": strain},
            "category": {"name": category},
            "image": {"url": f"https://images.example/wj/{5_001 + p}.jpg"},
            "variant": variants,
            "dateUpdated": iso(self.p_updated[p]),
        }

    def packages(self, f: _Facility) -> list[dict[str, Any]]:
        """Every package of the facility: 1-2 per listed variant, a few of unlisted ones."""
        out: list[dict[str, Any]] = []
        r = random.Random(f"{self.seed}:packages:{f.index}")
        seq = 0
        for v in range(self.n_variants):
            p = int(self.v_product[v])
            if not f.listed[p] and r.random() > 0.03:
                continue
            for _ in range(r.choice((1, 1, 2))):
                seq += 1
                cost = int(self.v_price[v] * r.uniform(0.35, 0.6))
                rooms = r.sample(f.rooms, r.choice((1, 1, 2)))
                out.append(
                    {
                        "id": f.id * 1_000_000 + seq,
                        "productId": self.variant_product_id(v),
                        "facilityId": f.id,
                        "label": f"1A40{r.getrandbits(40):010X}",
                        "costPerItem": dollars(cost),
                        "received": iso(self.now_ts - r.randint(1, 120) * DAY),
                        "packageQuantities": [
                            {
                                "locationId": room_id,
                                "location": {"name": room_name},
                                "quantity": 0 if r.random() < 0.1 else r.randint(1, 60),
                            }
                            for room_id, room_name in rooms
                        ],
                    }
                )
        return out

    # -- orders ----------------------------------------------------------------------------

    def _lines(self, f: _Facility, k: int) -> list[dict[str, Any]]:
        r = random.Random(f"{self.seed}:order:{f.index}:{k}")
        listed = np.nonzero(f.listed[self.v_product])[0]
        lines = []
        for i in range(r.choice((1, 1, 2, 2, 3, 4, 5))):
            v = int(listed[r.randrange(len(listed))]) if len(listed) else 0
            p = int(self.v_product[v])
            category, _, brand, _, name = self._product_words(p)
            qty = r.choice((1, 1, 1, 2, 3))
            price = int(self.v_price[v])
            sub = price * qty
            discount = sub // 10 if r.random() < 0.1 else 0
            tax = (sub - discount) * TAX_BP // 10_000
            pid = self.variant_product_id(v)
            lines.append(
                {
                    "id": (f.index + 1) * 100_000_000 + k * 10 + i,
                    "productId": pid,
                    "sku": f"WJ-{pid}" if v % 9 else None,
                    "name": name,
                    "brand": brand,
                    "category": category,
                    "quantity": qty,
                    "price": dollars(price),
                    "discount": dollars(discount),
                    "tax": dollars(tax),
                    "total": dollars(sub - discount),
                    "_cents": (sub, discount, tax),
                }
            )
        return lines

    def order_record(self, f: _Facility, k: int, variant: int = REAL) -> dict[str, Any]:
        status = int(f.status[k])
        is_return = int(f.kind[k]) == RETURN
        if is_return:
            o = int(f.original[k])
            lines = self._lines(f, o)
            keep = random.Random(f"{self.seed}:return:{f.index}:{k}").randint(1, len(lines))
            lines = lines[:keep]
        else:
            lines = self._lines(f, k)
        sub = sum(line["_cents"][0] for line in lines)
        discount = sum(line["_cents"][1] for line in lines)
        tax = sum(line["_cents"][2] for line in lines)
        total = sub - discount + tax
        sign = -1 if is_return else 1
        for line in lines:
            del line["_cents"]
            if is_return:  # returns carry negative amounts (the connector accepts either sign)
                for name in ("quantity", "price", "discount", "tax", "total"):
                    line[name] = -line[name] if line[name] else line[name]
        cid = int(f.customer[k])
        rec: dict[str, Any] = {
            "id": f.order_id(k),
            "companyId": self.company_id,
            "facilityId": f.id,
            "customerId": cid or None,
            "customer": self.order_customer(cid) if cid else None,
            "status": STATUSES[status],
            "orderType": "Return" if is_return else ORDER_TYPES[int(f.order_type[k])],
            "dateCreated": iso(f.created[k]),
            "dateCompleted": iso(f.completed[k]) if status in (0, 4, 5) else None,
            "dateUpdated": iso(f.updated[k]),
            "subtotal": dollars(sign * sub),
            "discount": dollars(sign * discount),
            "taxes": dollars(sign * tax),
            "total": dollars(sign * total),
            "paymentType": random.Random(f"{self.seed}:pay:{f.index}:{k}").choice(
                ("Cash", "Cash", "Debit")
            ),
            "details": lines,
        }
        if is_return:
            rec["originalOrderId"] = f.order_id(int(f.original[k]))
        if status == REFUNDED:
            rec["refundAmount"] = dollars(total)
        elif status == PARTIAL:
            first = lines[0]
            rec["refundAmount"] = round(first["total"] + first["tax"], 2)
        if variant == STALE:  # the order as it was before its last change
            if status in (REFUNDED, PARTIAL):
                rec["status"] = "Complete"
                rec.pop("refundAmount", None)
                rec["dateUpdated"] = iso(f.completed[k])
            else:
                rec["status"] = "Processing"
                rec["dateCompleted"] = None
                rec["dateUpdated"] = iso(f.created[k])
        bad = int(f.bad[k])
        if bad == 1:
            rec["total"] = "N/A"
        elif bad == 2 and rec["details"]:
            rec["details"][0]["quantity"] = "two"
        return rec


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


RetryAfter = Literal["seconds", "fraction", "none"]


class WebjointSandbox:
    """Local fake Webjoint company. Context manager; ``start()`` returns the base URL."""

    def __init__(
        self,
        *,
        company_id: int = 7,
        facilities: int = 3,
        orders: int = 30_000,
        customers: int = 5_000,
        products: int = 150,
        history_days: int = 90,
        seed: int = 42,
        api_key: str = "sandbox-key",
        rate: float | None = 10.0,
        burst: int = 10,
        retry_after: RetryAfter = "seconds",
        loose_days: int = 2,
        duplicate_share: float = 0.03,
        stale_share: float = 0.01,
        bad_share: float = 0.002,
        return_share: float = 0.01,
        chaos: Chaos | dict[str, Any] | None = None,
        now: datetime | None = None,
        timezone: str = "America/Los_Angeles",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.company_id = company_id
        self.api_key = api_key
        self.loose_days = loose_days
        self.duplicate_share = duplicate_share
        self.stale_share = stale_share
        self.retry_after = retry_after
        self.seed = seed
        self.chaos = chaos if isinstance(chaos, Chaos) else Chaos(**(chaos or {}))
        self.clock = SandboxClock(now)
        self.data = CompanyData(
            company_id=company_id,
            facilities=facilities,
            orders=orders,
            customers=customers,
            products=products,
            history_days=history_days,
            seed=seed,
            now_ts=self.clock.start_ts,
            timezone=timezone,
            bad_share=bad_share,
            return_share=return_share,
        )
        self._bucket = TokenBucket(rate, burst) if rate else None
        self._chaos = ChaosState(self.chaos, seed)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self.reset_counters()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._passes: dict[tuple[Any, ...], int] = {}
        self._edited_customers: set[int] = set()  # first name changed by modify_share()
        self._modify_rounds = 0
        self._server = ServerThread(self, host, port, "webjoint-sandbox")
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        port = self._server.start()
        self.base_url = f"http://{self._server.host}:{port}{API_PREFIX}"
        return self.base_url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> WebjointSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    # -- control and inspection ------------------------------------------------------------

    @property
    def facility_ids(self) -> list[int]:
        with self.data.lock:
            return [f.id for f in self.data.facilities]

    def add_facility(self, name: str | None = None, orders: int | None = None) -> int:
        """Open one more facility (with its own history); returns its id."""
        facility = self.data.add_facility(orders, name)
        with self._cache_lock:
            self._cache.clear()
        return facility.id

    def reset_counters(self) -> None:
        with self._stats_lock:
            self._stats = {
                "requests_total": 0,
                "by_endpoint": {},
                "by_status": {},
                "throttled_429": 0,
                "rows_served": 0,
                "duplicates_served": 0,
                "stale_served": 0,
            }

    def counters(self) -> dict[str, Any]:
        with self._stats_lock:
            snap = json.loads(json.dumps(self._stats))
        with self._chaos.lock:
            snap["faults"] = dict(self._chaos.injected)
        return snap

    def now_ts(self) -> int:
        """The sandbox's current time: fixed when ``now`` was given, else wall-clock-like."""
        return self.clock.now()

    # -- benchmark control (also served under /_admin/) ------------------------------------

    def advance_clock(self, seconds: int) -> int:
        """Move the sandbox's clock (e.g. a day: "the next night"); returns the new now."""
        return self.clock.advance(seconds)

    def modify_share(self, share: float) -> dict[str, int]:
        """A night of edits: ``share`` of each facility's orders updated "now" (completed sales
        become refunded, refunded ones complete again) and ``share`` of customers change first
        name. Deterministic from the seed and how many rounds came before."""
        d = self.data
        self._modify_rounds += 1
        ts = self.now_ts()
        orders = 0
        with d.lock:
            for f in d.facilities:
                rng = np.random.default_rng([self.seed, 7_000 + self._modify_rounds, f.index])
                n = min(f.n_orders, round(f.n_orders * share))
                ks = rng.choice(f.n_orders, n, replace=False) if n else np.zeros(0, np.int64)
                sale = f.kind[ks] == SALE
                f.status[ks] = np.where(
                    sale & (f.status[ks] == COMPLETE),
                    REFUNDED,
                    np.where(sale, COMPLETE, f.status[ks]),
                )
                f.updated[ks] = ts
                orders += n
            rng = np.random.default_rng([self.seed, 7_000 + self._modify_rounds])
            n_c = min(len(d.c_updated), round(len(d.c_updated) * share))
            cids = rng.choice(len(d.c_updated), n_c, replace=False) + 1
            d.c_updated[cids - 1] = ts
            self._edited_customers.update(int(c) for c in cids)
            d.version += 1
        with self._cache_lock:
            self._cache.clear()
        return {"orders": orders, "customers": n_c, "now": ts}

    def holdings(self) -> dict[str, int]:
        """Distinct orders, their lines and customers the listings serve (no copies)."""
        d = self.data
        with d.lock:
            facilities = list(d.facilities)
        items = sum(
            len(d.order_record(f, k)["details"]) for f in facilities for k in range(f.n_orders)
        )
        return {
            "orders": sum(f.n_orders for f in facilities),
            "items": items,
            "customers": len(d.c_updated),
        }

    def orders_in(self, facility_id: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Ground truth for tests: every order of a facility updated in [start, end), as the
        listing would serve it once without duplicates."""
        f = self.data.facility(facility_id)
        if f is None:
            return []
        lo, hi = int(start.timestamp()), int(end.timestamp())
        ks = np.nonzero((f.updated >= lo) & (f.updated < hi))[0]
        return [self.data.order_record(f, int(k)) for k in ks]

    def _count(self, key: str, sub: str | None = None, n: int = 1) -> None:
        with self._stats_lock:
            if sub is None:
                self._stats[key] += n
            else:
                bucket = self._stats[key]
                bucket[sub] = bucket.get(sub, 0) + n

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, handler: SandboxHandler) -> None:
        if handle_admin(self, handler):
            return
        split = urlsplit(handler.path)
        self._count("requests_total")
        path = split.path[len(API_PREFIX) :] if split.path.startswith(API_PREFIX) else None
        chaos_path = path or ""
        if self._chaos.hit("connection_reset", chaos_path):
            handler.reset_connection()
            return
        if self._chaos.hit("throttle_without_headers", chaos_path):
            self._send(handler, 429, {"message": "OVER LIMIT"}, path)
            return
        if self._bucket is not None:
            allowed, wait = self._bucket.take()
            if not allowed:
                self._count("throttled_429")
                headers = {}
                if self.retry_after != "none":
                    scale = 1.0 if self.retry_after == "seconds" else 0.0
                    headers["Retry-After"] = TokenBucket.retry_after(wait, scale)
                self._send(handler, 429, {"message": "OVER LIMIT"}, path, headers)
                return
        if self._chaos.hit("server_error", chaos_path):
            statuses = self.chaos.server_error_statuses
            status = statuses[(self._chaos.injected["server_error"] - 1) % len(statuses)]
            self._send(handler, status, {"message": "Internal server error"}, path)
            return
        if self._chaos.hit("slow", chaos_path):
            self._server.stopping.wait(self.chaos.slow_seconds)
        if handler.headers.get(AUTH_HEADER) != self.api_key:
            # Same answer for a missing or a wrong key; never echo what was sent.
            self._send(handler, 401, {"message": "Unauthorized"}, path)
            return
        routes: dict[str, Callable[[dict[str, str]], list[dict[str, Any]]]] = {
            "facilities": self._facilities,
            "orders": self._orders,
            "customers": self._customers,
            "products": self._products,
            "packages": self._packages,
        }
        route = routes.get((path or "").rstrip("/"))
        if handler.command != "GET" or route is None:
            self._send(handler, 404, {"message": "Not Found"}, path)
            return
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            company = int(query.get("companyId", ""))
        except ValueError:
            self._send(handler, 400, {"message": "companyId is required"}, path)
            return
        if company != self.company_id:
            self._send(handler, 403, {"message": "Forbidden"}, path)
            return
        try:
            rows = route(query)
        except _BadRequest as exc:
            self._send(handler, exc.status, {"message": exc.message}, path)
            return
        self._send(handler, 200, rows, path, chaos_path=chaos_path)

    def _send(
        self,
        handler: SandboxHandler,
        status: int,
        body: Any,
        path: str | None,
        headers: dict[str, str] | None = None,
        chaos_path: str | None = None,
    ) -> None:
        raw = json.dumps(body, separators=(",", ":")).encode()
        content_type = "application/json; charset=utf-8"
        if chaos_path is not None and status == 200:
            if self._chaos.hit("truncated_json", chaos_path):
                raw = raw[: max(1, len(raw) // 2)]
            elif self._chaos.hit("html_200", chaos_path):
                raw, content_type = _HTML_BODY, "text/html; charset=UTF-8"
        self._count("by_status", str(status))
        self._count("by_endpoint", f"GET {path}" if path is not None else "other")
        handler.write_response(status, raw, content_type, headers or {})

    # -- paging ----------------------------------------------------------------------------

    def _range(self, query: dict[str, str]) -> tuple[int, int]:
        raw = query.get("range")
        if raw is None or raw == "":
            return 0, DEFAULT_PAGE
        try:
            start, end = json.loads(raw)
            start, end = int(start), int(end)
        except (ValueError, TypeError):
            raise _BadRequest(400, "range must be a JSON array [start,end]") from None
        if start < 0 or end < start:
            raise _BadRequest(400, "range must be [start,end] with 0 <= start <= end")
        return start, min(end - start + 1, MAX_PAGE)

    def _page(
        self, query: dict[str, str], path: str, rows: Sequence[Any], render: Callable[[Any], Any]
    ) -> list[Any]:
        start, size = self._range(query)
        if start > 0 and self._chaos.hit("repeat_page", path):
            start = 0  # the server ignores range
        chunk = rows[start : start + size]
        self._count("rows_served", n=len(chunk))
        return [render(row) for row in chunk]

    def _pass(self, key: tuple[Any, ...], query: dict[str, str]) -> int:
        """Which pass over this listing a request belongs to: `range=[0,..]` starts one."""
        with self._cache_lock:
            starts = (query.get("range") or "[0").lstrip("[").split(",")[0].strip() in ("0", "")
            current = self._passes.get(key, 0)
            if starts:
                current += 1
                self._passes[key] = current
            return max(current, 1)

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        key = (self.data.version, *key)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = build()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 128:
                self._cache.popitem(last=False)
        return value

    def _dates(self, query: dict[str, str]) -> tuple[int | None, int | None]:
        """[lo, hi) in UTC seconds from dateFrom/dateTo, lo loosened by `loose_days`."""

        def day(name: str) -> int | None:
            raw = query.get(name)
            if not raw:
                return None
            try:
                parsed = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise _BadRequest(400, f"{name} must be a date (YYYY-MM-DD)") from None
            return int(parsed.timestamp())

        lo, hi = day("dateFrom"), day("dateTo")
        return (
            None if lo is None else lo - self.loose_days * DAY,
            None if hi is None else hi + DAY,
        )

    def _with_copies(
        self,
        rows: np.ndarray,
        key: tuple[Any, ...],
        generation: int,
        dup_ok: np.ndarray,
        stale_ok: np.ndarray,
    ) -> np.ndarray:
        """The listing with this pass's duplicates, as codes `row * 4 + variant`: each copy
        lands up to 150 rows before or 250 after its original (often on another page)."""
        n = len(rows)
        codes = rows * 4 + REAL
        if n == 0 or not (self.duplicate_share or self.stale_share):
            return codes
        rng = np.random.default_rng([self.seed, _stable_hash(*key), generation])
        dup = (rng.random(n) < self.duplicate_share) & dup_ok
        stale = (rng.random(n) < self.stale_share) & stale_ok
        shift = rng.integers(-150, 250, n)
        where = np.clip(np.arange(n) + shift, 0, n).astype(float) + 0.5
        positions = np.concatenate([np.arange(n, dtype=float), where[dup], where[stale]])
        all_codes = np.concatenate([codes, rows[dup] * 4 + COPY, rows[stale] * 4 + STALE])
        return all_codes[np.argsort(positions, kind="stable")]

    # -- endpoints -------------------------------------------------------------------------

    def _facility_of(self, query: dict[str, str]) -> Any:
        raw = query.get("facilityId")
        if not raw:
            raise _BadRequest(400, "facilityId is required")
        try:
            facility = self.data.facility(int(raw))
        except ValueError:
            facility = None
        if facility is None:
            raise _BadRequest(404, "Facility not found")
        return facility

    def _facilities(self, query: dict[str, str]) -> list[dict[str, Any]]:
        with self.data.lock:
            facilities = list(self.data.facilities)
        return self._page(query, "facilities", facilities, self.data.facility_record)

    def _orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        f = self._facility_of(query)
        lo, hi = self._dates(query)
        key = ("orders", f.id, lo, hi)
        generation = self._pass(key, query)

        def build() -> np.ndarray:
            mask = np.ones(f.n_orders, dtype=bool)
            if lo is not None:
                mask &= f.updated >= lo
            if hi is not None:
                mask &= f.updated < hi
            rows = np.nonzero(mask)[0].astype(np.int64)
            # Malformed orders are never copied, so their quarantine is the same every pass;
            # stale copies only of sales that had an earlier state.
            fine = f.bad[rows] == 0
            had_before = np.isin(f.status[rows], (COMPLETE, REFUNDED, PARTIAL))
            stale_ok = fine & had_before & (f.kind[rows] == SALE)
            return self._with_copies(rows, key, generation, fine, stale_ok)

        listing = self._cached((*key, generation), build)

        def render(code: Any) -> dict[str, Any]:
            variant = int(code) % 4
            if variant == COPY:
                self._count("duplicates_served")
            elif variant == STALE:
                self._count("stale_served")
            return self.data.order_record(f, int(code) // 4, variant)

        return self._page(query, "orders", listing, render)

    def _customers(self, query: dict[str, str]) -> list[dict[str, Any]]:
        lo, hi = self._dates(query)
        key = ("customers", lo, hi)
        generation = self._pass(key, query)
        d = self.data

        def build() -> np.ndarray:
            mask = np.ones(len(d.c_updated), dtype=bool)
            if lo is not None:
                mask &= d.c_updated >= lo
            if hi is not None:
                mask &= d.c_updated < hi
            rows = np.nonzero(mask)[0].astype(np.int64)
            none = np.zeros(len(rows), dtype=bool)
            return self._with_copies(rows, key, generation, ~none, none)

        listing = self._cached((*key, generation), build)

        def render(code: Any) -> dict[str, Any]:
            if int(code) % 4 == COPY:
                self._count("duplicates_served")
            cid = int(code) // 4 + 1
            record = d.customer_record(cid)
            if cid in self._edited_customers:
                record["firstName"] = f"{record['firstName']} Jr"
            return record

        return self._page(query, "customers", listing, render)

    def _products(self, query: dict[str, str]) -> list[dict[str, Any]]:
        f = self._facility_of(query)
        listed = np.nonzero(f.listed)[0]
        return self._page(query, "products", listed, lambda p: self.data.product_record(int(p)))

    def _packages(self, query: dict[str, str]) -> list[dict[str, Any]]:
        f = self._facility_of(query)
        packages = self._cached(("packages", f.id), lambda: self.data.packages(f))
        return self._page(query, "packages", packages, lambda row: row)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aiq_sync.sandbox.webjoint",
        description="Serve a fake Webjoint company on loopback until Ctrl-C. "
        "Send SIGUSR1 (POSIX) to open one more facility.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766, help="0 picks a free port")
    parser.add_argument("--company-id", type=int, default=7)
    parser.add_argument("--facilities", type=int, default=3)
    parser.add_argument("--orders", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--products", type=int, default=150)
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--api-key", default="sandbox-key")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per key; 0: none")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--retry-after", choices=("seconds", "fraction", "none"), default="seconds")
    parser.add_argument("--loose-days", type=int, default=2)
    parser.add_argument("--duplicate-share", type=float, default=0.03)
    parser.add_argument("--stale-share", type=float, default=0.01)
    parser.add_argument("--timezone", default="America/Los_Angeles")
    parser.add_argument("--now", help="fixed current time, ISO-8601 (default: wall clock)")
    parser.add_argument(
        "--chaos", default="", help="e.g. server_error=0.05,repeat_page=1,slow_seconds=1.5"
    )
    args = parser.parse_args(argv)
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else None
    sandbox = WebjointSandbox(
        company_id=args.company_id,
        facilities=args.facilities,
        orders=args.orders,
        customers=args.customers,
        products=args.products,
        history_days=args.history_days,
        seed=args.seed,
        api_key=args.api_key,
        rate=args.rate or None,
        burst=args.burst,
        retry_after=args.retry_after,
        loose_days=args.loose_days,
        duplicate_share=args.duplicate_share,
        stale_share=args.stale_share,
        chaos=Chaos.parse(args.chaos),
        now=now,
        timezone=args.timezone,
        host=args.host,
        port=args.port,
    )
    base_url = sandbox.start()
    _on_sigusr1(sandbox)
    print(f"Webjoint sandbox serving at {base_url}", flush=True)
    print(
        f"{AUTH_HEADER}: {args.api_key}    companyId: {args.company_id}    "
        f"facilities: {', '.join(map(str, sandbox.facility_ids))}    (Ctrl-C to stop)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        print(json.dumps(sandbox.counters(), indent=2), file=sys.stderr)
    return 0


def _on_sigusr1(sandbox: WebjointSandbox) -> None:
    if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return

    def add(signum: int, frame: Any) -> None:
        fid = sandbox.add_facility()
        print(f"opened facility {fid}", flush=True)

    signal.signal(signal.SIGUSR1, add)


if __name__ == "__main__":
    raise SystemExit(main())

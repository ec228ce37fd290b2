"""Deterministic, lazily generated BigCommerce store data for the sandbox server.

Cheap per-record attributes that listing and filtering need (dates, status, customer, item
counts) live in numpy arrays built once from the seed; everything else is generated on demand
from ``random.Random(f"{seed}:{kind}:{id}")``, so a million orders cost a few arrays, not a
million dicts, and the same seed always yields the same bodies. Body shapes follow the official
OpenAPI specs (orders.v2.oas2.yml, customers.v3.yml, products_catalog.v3.yml, inventory.v3.yml,
locations.v3.yml, store_information.v2.yml).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

DAY = 86_400
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def rfc2822(ts: int) -> str:
    """``Wed, 10 Jan 2018 21:05:30 +0000``: v2 bodies are always UTC. Locale-independent."""
    d = datetime.fromtimestamp(int(ts), UTC)
    return (
        f"{_WEEKDAYS[d.weekday()]}, {d.day:02d} {_MONTHS[d.month - 1]} {d.year} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} +0000"
    )


def iso_z(ts: int) -> str:
    """``2018-08-15T14:49:05Z`` (customers v3, locations)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_offset(ts: int) -> str:
    """``2018-08-15T14:49:05+00:00`` (catalog v3)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@lru_cache(maxsize=1 << 16)  # hot path: ~80 calls per order, few distinct values
def money(cents: int) -> str:
    """Money as BigCommerce v2 sends it: a string with 4 decimals (``"361.9500"``)."""
    if cents < 0:
        return "-" + money(-cents)
    units, rest = divmod(cents, 100)
    return f"{units}.{rest:02d}00"


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Carlos Karen Daniel Lisa Matthew Nancy "
    "Anthony Betty Mark Sandra Donald Ashley Steven Kimberly Andrew Emily Joshua Donna Kevin "
    "Michelle Brian Carol George Amanda Timothy Melissa Jose Deborah Ryan Stephanie Jacob "
    "Rebecca Gary Sharon Nicholas Laura Eric Cynthia Jonathan Amy Priya Wei Fatima Mateo "
    "Aaliyah Nguyen Sofia"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter "
    "Roberts Patel Kim Chen O'Brien Müller Dubois Kowalski Okafor Yamamoto"
)
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "aol.com")
STREETS = (
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Washington Blvd",
    "Lake Shore Dr",
    "Sunset Blvd",
    "Broadway",
    "Congress Ave",
    "Mission St",
    "Colfax Ave",
    "Peachtree St NE",
    "Hennepin Ave",
)
# (city, state, state code, zip prefix, area codes, country code, country)
CITIES = (
    ("Austin", "Texas", "TX", "787", ("512", "737"), "US", "United States"),
    ("Sacramento", "California", "CA", "958", ("916", "279"), "US", "United States"),
    ("Denver", "Colorado", "CO", "802", ("303", "720"), "US", "United States"),
    ("Seattle", "Washington", "WA", "981", ("206",), "US", "United States"),
    ("Portland", "Oregon", "OR", "972", ("503", "971"), "US", "United States"),
    ("Chicago", "Illinois", "IL", "606", ("312", "773"), "US", "United States"),
    ("Boston", "Massachusetts", "MA", "021", ("617", "857"), "US", "United States"),
    ("Phoenix", "Arizona", "AZ", "850", ("602", "480"), "US", "United States"),
    ("Las Vegas", "Nevada", "NV", "891", ("702", "725"), "US", "United States"),
    ("Detroit", "Michigan", "MI", "482", ("313",), "US", "United States"),
    ("Brooklyn", "New York", "NY", "112", ("718", "347"), "US", "United States"),
    ("Miami", "Florida", "FL", "331", ("305", "786"), "US", "United States"),
    ("Atlanta", "Georgia", "GA", "303", ("404", "470"), "US", "United States"),
    ("Columbus", "Ohio", "OH", "432", ("614",), "US", "United States"),
    ("Minneapolis", "Minnesota", "MN", "554", ("612",), "US", "United States"),
    ("San Diego", "California", "CA", "921", ("619", "858"), "US", "United States"),
    ("Toronto", "Ontario", "ON", "M5V", ("416", "647"), "CA", "Canada"),
    ("Vancouver", "British Columbia", "BC", "V6B", ("604", "778"), "CA", "Canada"),
)
_US_CITY_WEIGHTS = [8] * 16 + [1, 1]
# Numbers a validating parser must reject (README: these become blank).
INVALID_PHONES = ("555-123-4567", "1234567890", "000-000-0000", "123-4567", "(555) 555-5555")
PRODUCT_ADJECTIVES = _words(
    "Organic Classic Vintage Everyday Premium Heritage Lightweight Recycled Artisan Cozy "
    "Sport Travel Signature Essential Coastal"
)
PRODUCT_NOUNS = _words(
    "Tee Hoodie Tote Mug Candle Journal Beanie Socks Water-Bottle Backpack Notebook Blanket "
    "Apron Cap Scarf"
)
SIZES = ("S", "M", "L", "XL")
COLORS = ("Black", "White", "Navy", "Olive", "Sand")
BRANDS = ("Northwind", "Acme Goods", "Common Thread", "Harbor & Pine")

# Status id -> (name, weight %) — a realistic mix for a retail store, incl. refunds and voids.
STATUSES: dict[int, tuple[str, float]] = {
    0: ("Incomplete", 4),
    1: ("Pending", 2),
    2: ("Shipped", 20),
    3: ("Partially Shipped", 1),
    4: ("Refunded", 3),
    5: ("Cancelled", 3),
    6: ("Declined", 2),
    7: ("Awaiting Payment", 3),
    8: ("Awaiting Pickup", 2),
    9: ("Awaiting Shipment", 3),
    10: ("Completed", 45),
    11: ("Awaiting Fulfillment", 8),
    12: ("Manual Verification Required", 1),
    13: ("Disputed", 1),
    14: ("Partially Refunded", 2),
}
STATUS_DESCRIPTIONS = {
    0: "An incomplete order happens when a shopper reached the payment page, but did not "
    "complete the transaction.",
    1: "Customer started the checkout process, but did not complete it.",
    2: "Order has been shipped, but receipt has not been confirmed; seller has used the Ship "
    "Items action.",
    3: "Only some items in the order have been shipped, due to some products being pre-order "
    "only or other reasons.",
    4: "Seller has used the Refund action.",
    5: "Seller has cancelled an order, due to a stock inconsistency or other reasons.",
    6: "Seller has marked the order as declined for lack of manual payment, or other reasons.",
    7: "Customer has completed checkout process, but payment has yet to be confirmed.",
    8: "Order has been pulled, and is awaiting customer pickup from a seller-specified location.",
    9: "Order has been pulled and packaged, and is awaiting collection from a shipping provider.",
    10: "Client has paid for their digital product and their file(s) are available for download.",
    11: "Customer has completed the checkout process and payment has been confirmed.",
    12: "Order is on hold while some aspect needs to be manually confirmed.",
    13: "Customer has initiated a dispute resolution process for the PayPal transaction that "
    "paid for the order.",
    14: "Seller has partially refunded the order.",
}
# Control-panel sort order of statuses, as in the spec's /orders/count example.
STATUS_SORT_ORDER = (0, 1, 7, 11, 9, 8, 3, 10, 2, 5, 6, 4, 13, 12, 14)
_PAYMENT_STATUS = {
    0: "",
    1: "pending",
    4: "refunded",
    5: "void",
    6: "declined",
    7: "pending",
    12: "held for review",
    14: "partially refunded",
}
_SHIPPED_STATUSES = (2, 10)
_TAX_RATE_BP = 825  # 8.25 %


@dataclass(frozen=True, slots=True)
class Person:
    first_name: str
    last_name: str
    email: str
    phone: str
    company: str
    street_1: str
    street_2: str
    city: str
    state: str
    state_code: str
    zip: str
    country_code: str
    country: str
    address_phone: str


def _phone(r: random.Random, area_codes: tuple[str, ...]) -> str:
    """A NANP number: mostly valid, in the many formats shoppers type."""
    area = r.choice(area_codes)
    while True:
        exchange = r.randint(201, 989)
        if exchange % 100 != 11 and exchange not in (555, 950, 958, 959, 976):
            break
    line = r.randint(0, 9999)
    fmt = r.randrange(8)
    e, s = f"{exchange:03d}", f"{line:04d}"
    return (
        f"{area}-{e}-{s}",
        f"({area}) {e}-{s}",
        f"+1{area}{e}{s}",
        f"{area}{e}{s}",
        f"1-{area}-{e}-{s}",
        f"{area}.{e}.{s}",
        f"+1 {area} {e} {s}",
        f"{area}-{e}-{s}",
    )[fmt]


def _phone_mix(r: random.Random, area_codes: tuple[str, ...]) -> str:
    roll = r.random()
    if roll < 0.74:
        return _phone(r, area_codes)
    if roll < 0.80:
        return r.choice(INVALID_PHONES)
    if roll < 0.83:
        return f"{r.choice(('800', '888', '877'))}-{r.randint(200, 989)}-{r.randint(0, 9999):04d}"
    return ""


def _person(seed: int, kind: str, idx: int) -> Person:
    r = random.Random(f"{seed}:{kind}:{idx}")
    first = r.choice(FIRST_NAMES)
    last = r.choice(LAST_NAMES)
    city, state, code, zip_prefix, areas, cc, country = r.choices(CITIES, _US_CITY_WEIGHTS)[0]
    local = "".join(ch for ch in f"{first}.{last}".lower() if ch.isalnum() or ch == ".")
    style = r.randrange(10)
    if style < 6:
        user = f"{local}{idx}"
    elif style < 8:
        user = f"{local.replace('.', '')}{idx}"
    else:
        user = f"{local[0]}.{local.split('.', 1)[-1]}{idx}"
    email = f"{user}@{r.choice(EMAIL_DOMAINS)}"
    if r.random() < 0.03:  # some shoppers type their address capitalised
        email = email[0].upper() + email[1:]
    phone = _phone_mix(r, areas)
    address_phone = phone if r.random() < 0.6 else _phone_mix(r, areas)
    if not phone and r.random() < 0.5:
        address_phone = _phone(r, areas)  # phone only on the address
    if cc == "US":
        zip_code = f"{zip_prefix}{r.randint(1, 99):02d}"
    else:
        zip_code = f"{zip_prefix} {r.randint(1, 9)}{chr(65 + r.randrange(26))}{r.randint(1, 9)}"
    return Person(
        first_name=first,
        last_name=last,
        email=email,
        phone=phone,
        company=r.choice(("", "", "", "", "Acme Corp", "Globex", "Initech")),
        street_1=f"{r.randint(1, 9999)} {r.choice(STREETS)}",
        street_2=r.choice(("", "", "", f"Apt {r.randint(1, 40)}", f"Suite {r.randint(100, 900)}")),
        city=city,
        state=state,
        state_code=code,
        zip=zip_code,
        country_code=cc,
        country=country,
        address_phone=address_phone,
    )


@lru_cache(maxsize=1 << 16)  # ~64 MB at most: orders re-use their shoppers, ~1/6 of page time
def _customer_person(seed: int, cid: int) -> Person:
    return _person(seed, "customer", cid)


def _ip(r: random.Random) -> str:
    return f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"


def _cumulative_base(counts: np.ndarray) -> np.ndarray:
    """First id of each record's children, ids starting at 1 (prefix sums)."""
    base = np.empty(len(counts) + 1, dtype=np.int64)
    base[0] = 1
    np.cumsum(counts, out=base[1:])
    base[1:] += 1
    return base


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class StoreData:
    """All records of one fake store. Thread-safe for the few mutations (bumps, creations)."""

    def __init__(
        self,
        *,
        store_hash: str,
        orders: int,
        customers: int,
        products: int,
        locations: int,
        items_per_order: float,
        seed: int,
        now_ts: int,
        history_days: int = 730,
        timezone: str = "America/Chicago",
        quota: int = 150,
    ) -> None:
        self.store_hash = store_hash
        self.seed = seed
        self.now_ts = now_ts
        self.timezone = timezone
        self.quota = quota
        self.n_locations = max(1, locations)
        self.lock = threading.RLock()
        self.version = 0  # bumped on every mutation; query caches key on it
        rng = np.random.default_rng(seed)
        start = now_ts - history_days * DAY
        # Generated data ends a minute before "now" so anything modified at "now" sorts after it.
        end = now_ts - 60

        # Customers: ids grow with creation time; about 30 % were edited later.
        nc = max(0, customers)
        self.c_created = np.sort(rng.integers(start, end, nc, dtype=np.int64))
        later = rng.random(nc) < 0.3
        edit = (rng.random(nc) * (end - self.c_created)).astype(np.int64)
        self.c_modified = self.c_created + np.where(later, edit, rng.integers(0, 120, nc))
        self.c_addr_count = rng.choice(4, nc, p=[0.1, 0.6, 0.22, 0.08]).astype(np.int64)
        self.c_addr_base = _cumulative_base(self.c_addr_count)
        self.n_generated_customers = nc
        self.created_customers: dict[int, dict[str, Any]] = {}
        self.created_emails: dict[str, int] = {}
        self._phone_index: dict[str, list[int]] | None = None
        self._last_name_rank: np.ndarray | None = None

        # Products and variants (1-4 variants each); inventory per variant and location.
        n_p = max(1, products)
        self.p_nvar = rng.choice([1, 2, 3, 4], n_p, p=[0.4, 0.2, 0.15, 0.25]).astype(np.int64)
        self.p_var_base = _cumulative_base(self.p_nvar)
        self.n_variants = int(self.p_nvar.sum())
        self.v_product = np.repeat(np.arange(1, n_p + 1, dtype=np.int64), self.p_nvar)
        self.p_created = np.sort(rng.integers(start - 180 * DAY, end, n_p, dtype=np.int64))
        self.p_modified = self.p_created + (rng.random(n_p) * (end - self.p_created)).astype(
            np.int64
        )
        self._word_cache: dict[int, tuple[str, str]] = {}
        self._variant_cache: dict[int, tuple[str, str, tuple[str, str] | None, int]] = {}
        self.p_price_cents = rng.integers(500, 12_000, n_p, dtype=np.int64)
        self.inv_onhand = rng.integers(0, 120, (self.n_variants, self.n_locations), dtype=np.int64)
        self.inv_onhand[rng.random(self.inv_onhand.shape) < 0.08] = 0

        # Orders: ids grow with creation time; most are modified within hours of creation,
        # some (refunds, late shipments) weeks later.
        n_o = max(0, orders)
        self.o_created = np.sort(rng.integers(start, end, n_o, dtype=np.int64))
        late = rng.random(n_o) < 0.15
        soon = rng.integers(0, 6 * 3600, n_o, dtype=np.int64)
        much_later = (rng.random(n_o) * np.minimum(end - self.o_created, 60 * DAY)).astype(np.int64)
        self.o_modified = np.minimum(self.o_created + np.where(late, much_later, soon), end)
        ids = np.array(list(STATUSES), dtype=np.int64)
        weights = np.array([w for _, w in STATUSES.values()], dtype=float)
        self.o_status = rng.choice(ids, n_o, p=weights / weights.sum())
        self.o_deleted = rng.random(n_o) < 0.01
        # Customer: a shopper who existed when the order was placed, or a guest (id 0).
        existing = np.searchsorted(self.c_created, self.o_created, side="right")
        pick = (rng.random(n_o) * np.maximum(existing, 1)).astype(np.int64) + 1
        guest = (rng.random(n_o) < 0.25) | (existing == 0)
        self.o_customer = np.where(guest, 0, pick)
        extra = rng.poisson(max(0.0, items_per_order - 1.0), n_o)
        self.o_nitems = (1 + extra).astype(np.int64)
        self.o_item_base = _cumulative_base(self.o_nitems)
        self.o_pickup = (self.o_status == 8) | (rng.random(n_o) < 0.12)

    # -- sizes ---------------------------------------------------------------------------

    @property
    def n_orders(self) -> int:
        return len(self.o_created)

    @property
    def n_customers(self) -> int:
        return len(self.c_created)

    @property
    def n_products(self) -> int:
        return len(self.p_nvar)

    def mutate(self) -> None:
        self.version += 1

    # -- people --------------------------------------------------------------------------

    def customer_person(self, cid: int) -> Person:
        return _customer_person(self.seed, cid)

    def customer_email(self, cid: int) -> str:
        if cid in self.created_customers:
            return self.created_customers[cid]["email"]
        return self.customer_person(cid).email

    def customer_phone(self, cid: int) -> str:
        if cid in self.created_customers:
            return self.created_customers[cid].get("phone", "")
        return self.customer_person(cid).phone

    def find_customer_by_email(self, email: str) -> int | None:
        """Emails end in the customer id before the ``@`` (cheap inverse, no index)."""
        key = email.strip().lower()
        if key in self.created_emails:
            return self.created_emails[key]
        local = key.split("@", 1)[0]
        digits = ""
        for ch in reversed(local):
            if not ch.isdigit():
                break
            digits = ch + digits
        if digits and 1 <= int(digits) <= self.n_generated_customers:
            cid = int(digits)
            if self.customer_email(cid).lower() == key:
                return cid
        return None

    def find_customers_by_phone(self, phone: str) -> list[int]:
        with self.lock:
            if self._phone_index is None:
                index: dict[str, list[int]] = {}
                for cid in range(1, self.n_generated_customers + 1):
                    p = self.customer_person(cid).phone
                    if p:
                        index.setdefault(p, []).append(cid)
                for cid, rec in self.created_customers.items():
                    if rec.get("phone"):
                        index.setdefault(rec["phone"], []).append(cid)
                self._phone_index = index
            return list(self._phone_index.get(phone.strip(), []))

    def last_name_rank(self) -> np.ndarray:
        with self.lock:
            if self._last_name_rank is None or len(self._last_name_rank) != self.n_customers:
                names = [self.customer_record(cid)["last_name"].lower() for cid in self._cids()]
                _, inverse = np.unique(np.array(names, dtype=object), return_inverse=True)
                self._last_name_rank = inverse.astype(np.int64)
            return self._last_name_rank

    def _cids(self) -> range:
        return range(1, self.n_customers + 1)

    # -- customers (v3) ------------------------------------------------------------------

    def customer_addresses(self, cid: int) -> list[dict[str, Any]]:
        if cid in self.created_customers:
            return [dict(a) for a in self.created_customers[cid].get("addresses", [])]
        out = []
        base = int(self.c_addr_base[cid - 1])
        for k in range(int(self.c_addr_count[cid - 1])):
            p = self.customer_person(cid) if k == 0 else _person(self.seed, f"addr{k}:{cid}", cid)
            me = self.customer_person(cid)
            out.append(
                {
                    "id": base + k,
                    "customer_id": cid,
                    "first_name": me.first_name,
                    "last_name": me.last_name,
                    "company": me.company,
                    "address1": p.street_1,
                    "address2": p.street_2,
                    "city": p.city,
                    "state_or_province": p.state,
                    "postal_code": p.zip,
                    "country_code": p.country_code,
                    "country": p.country,
                    "phone": p.address_phone,
                    "address_type": "residential" if k == 0 or not p.company else "commercial",
                }
            )
        return out

    def customer_record(self, cid: int, *, include_addresses: bool = False) -> dict[str, Any]:
        if cid in self.created_customers:
            rec = dict(self.created_customers[cid])
            addresses = rec.pop("addresses", [])
            if include_addresses:
                rec["addresses"] = [dict(a) for a in addresses]
            return rec
        p = self.customer_person(cid)
        r = random.Random(f"{self.seed}:customer-extra:{cid}")
        rec: dict[str, Any] = {
            "id": cid,
            "email": p.email,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "company": p.company,
            "phone": p.phone,
            "registration_ip_address": "" if r.random() < 0.3 else _ip(r),
            "notes": "",
            "tax_exempt_category": "",
            "customer_group_id": r.choice((0, 0, 0, 1)),
            "date_created": iso_z(int(self.c_created[cid - 1])),
            "date_modified": iso_z(int(self.c_modified[cid - 1])),
            "address_count": int(self.c_addr_count[cid - 1]),
            "attribute_count": 0,
            "authentication": {"force_password_reset": False},
            "store_credit_amounts": [{"amount": 0}],
            "accepts_product_review_abandoned_cart_emails": r.random() < 0.4,
            "origin_channel_id": 1,
            "channel_ids": [1],
        }
        if include_addresses:
            rec["addresses"] = self.customer_addresses(cid)
        return rec

    def create_customer(self, body: dict[str, Any], now_ts: int) -> dict[str, Any]:
        """Store a POSTed customer (already validated) and return its customer_Full record."""
        with self.lock:
            cid = self.n_customers + 1
            next_addr = int(self.c_addr_base[-1]) + sum(
                len(c.get("addresses", [])) for c in self.created_customers.values()
            )
            addresses = []
            for k, a in enumerate(body.get("addresses") or []):
                addresses.append(
                    {
                        "id": next_addr + k,
                        "customer_id": cid,
                        "first_name": a.get("first_name", ""),
                        "last_name": a.get("last_name", ""),
                        "company": a.get("company", ""),
                        "address1": a.get("address1", ""),
                        "address2": a.get("address2", ""),
                        "city": a.get("city", ""),
                        "state_or_province": a.get("state_or_province", ""),
                        "postal_code": a.get("postal_code", ""),
                        "country_code": a.get("country_code", ""),
                        "country": "United States"
                        if a.get("country_code") == "US"
                        else a.get("country_code", ""),
                        "phone": a.get("phone", ""),
                        "address_type": a.get("address_type", "residential"),
                    }
                )
            rec = {
                "id": cid,
                "email": body["email"],
                "first_name": body["first_name"],
                "last_name": body["last_name"],
                "company": body.get("company", ""),
                "phone": body.get("phone", ""),
                "registration_ip_address": "",
                "notes": body.get("notes", ""),
                "tax_exempt_category": body.get("tax_exempt_category", ""),
                "customer_group_id": int(body.get("customer_group_id") or 0),
                "date_created": iso_z(now_ts),
                "date_modified": iso_z(now_ts),
                "address_count": len(addresses),
                "attribute_count": 0,
                "authentication": {"force_password_reset": False},
                "store_credit_amounts": [{"amount": 0}],
                "accepts_product_review_abandoned_cart_emails": bool(
                    body.get("accepts_product_review_abandoned_cart_emails", False)
                ),
                "origin_channel_id": int(body.get("origin_channel_id") or 1),
                "channel_ids": list(body.get("channel_ids") or [1]),
                "addresses": addresses,
            }
            self.created_customers[cid] = rec
            self.created_emails[rec["email"].strip().lower()] = cid
            self.c_created = np.append(self.c_created, now_ts)
            self.c_modified = np.append(self.c_modified, now_ts)
            if self._phone_index is not None and rec["phone"]:
                self._phone_index.setdefault(rec["phone"], []).append(cid)
            self.mutate()
            out = dict(rec)
            return out

    # -- catalog -------------------------------------------------------------------------

    def _product_words(self, pid: int) -> tuple[str, str, random.Random]:
        r = random.Random(f"{self.seed}:product:{pid}")
        adjective = r.choice(PRODUCT_ADJECTIVES)
        noun = r.choice(PRODUCT_NOUNS)
        return adjective, noun, r

    def _noun(self, pid: int) -> tuple[str, str]:
        # Line items look products up thousands of times per page; the catalog is small.
        words = self._word_cache.get(pid)
        if words is None:
            adjective, noun, _ = self._product_words(pid)
            words = self._word_cache[pid] = (adjective, noun)
        return words

    def product_name(self, pid: int) -> str:
        adjective, noun = self._noun(pid)
        return f"{adjective} {noun.replace('-', ' ')} #{pid}"

    def product_sku(self, pid: int) -> str:
        _, noun = self._noun(pid)
        return f"{noun[:3].upper()}-{pid:05d}"

    def variant_ids(self, pid: int) -> range:
        base = int(self.p_var_base[pid - 1])
        return range(base, base + int(self.p_nvar[pid - 1]))

    def variant_option(self, vid: int) -> tuple[str, str] | None:
        """(option display name, label) of a variant; None for a product without options."""
        pid = int(self.v_product[vid - 1])
        n = int(self.p_nvar[pid - 1])
        if n == 1:
            return None
        k = vid - int(self.p_var_base[pid - 1])
        _, noun = self._noun(pid)
        if noun in ("Tee", "Hoodie", "Socks", "Beanie", "Cap", "Apron", "Scarf"):
            return "Size", SIZES[k % len(SIZES)]
        return "Color", COLORS[k % len(COLORS)]

    def variant_sku(self, vid: int) -> str:
        pid = int(self.v_product[vid - 1])
        opt = self.variant_option(vid)
        sku = self.product_sku(pid)
        return sku if opt is None else f"{sku}-{opt[1][:3].upper()}"

    def _variant_info(self, vid: int) -> tuple[str, str, tuple[str, str] | None, int]:
        """(product name, sku, option, price in cents), cached: line items need it per row."""
        info = self._variant_cache.get(vid)
        if info is None:
            pid = int(self.v_product[vid - 1])
            info = (
                self.product_name(pid),
                self.variant_sku(vid),
                self.variant_option(vid),
                self.variant_price_cents(vid),
            )
            self._variant_cache[vid] = info
        return info

    def variant_price_cents(self, vid: int) -> int:
        pid = int(self.v_product[vid - 1])
        k = vid - int(self.p_var_base[pid - 1])
        return int(self.p_price_cents[pid - 1]) + 200 * (k % 3 == 2)

    def variant_record(self, vid: int) -> dict[str, Any]:
        pid = int(self.v_product[vid - 1])
        opt = self.variant_option(vid)
        price = self.variant_price_cents(vid) / 100
        option_values = []
        if opt is not None:
            k = vid - int(self.p_var_base[pid - 1])
            option_values.append(
                {
                    "id": 100 + k,
                    "label": opt[1],
                    "option_id": pid * 10,
                    "option_display_name": opt[0],
                }
            )
        return {
            "id": vid,
            "product_id": pid,
            "sku": self.variant_sku(vid),
            "sku_id": vid,
            "price": price,
            "calculated_price": price,
            "sale_price": None,
            "retail_price": None,
            "map_price": 0,
            "weight": None,
            "calculated_weight": 1.0,
            "width": None,
            "height": None,
            "depth": None,
            "is_free_shipping": False,
            "fixed_cost_shipping_price": None,
            "purchasing_disabled": False,
            "purchasing_disabled_message": "",
            "image_url": "",
            "cost_price": round(price * 0.45, 2),
            "upc": "",
            "mpn": "",
            "gtin": "",
            "inventory_level": int(self.inv_onhand[vid - 1].sum()),
            "inventory_warning_level": 5,
            "bin_picking_number": "",
            "option_values": option_values,
        }

    def product_record(self, pid: int, *, include_variants: bool = False) -> dict[str, Any]:
        adjective, noun, r = self._product_words(pid)
        vids = self.variant_ids(pid)
        price = int(self.p_price_cents[pid - 1]) / 100
        rec: dict[str, Any] = {
            "id": pid,
            "name": self.product_name(pid),
            "type": "physical",
            "sku": self.product_sku(pid),
            "description": f"<p>{adjective} {noun.replace('-', ' ').lower()} for every day.</p>",
            "weight": round(r.uniform(0.2, 4.0), 2),
            "width": 0,
            "depth": 0,
            "height": 0,
            "price": price,
            "cost_price": round(price * 0.45, 2),
            "retail_price": 0,
            "sale_price": 0,
            "map_price": 0,
            "tax_class_id": 0,
            "product_tax_code": "",
            "calculated_price": price,
            "categories": [18 + pid % 5],
            "brand_id": 1 + pid % len(BRANDS),
            "option_set_display": "right",
            "inventory_level": int(self.inv_onhand[vids.start - 1 : vids.stop - 1].sum()),
            "inventory_warning_level": 5,
            "inventory_tracking": "variant" if len(vids) > 1 else "product",
            "reviews_rating_sum": 0,
            "reviews_count": 0,
            "total_sold": r.randint(0, 900),
            "fixed_cost_shipping_price": 0,
            "is_free_shipping": False,
            "is_visible": r.random() > 0.05,
            "is_featured": r.random() < 0.1,
            "related_products": [-1],
            "warranty": "",
            "bin_picking_number": "",
            "layout_file": "product.html",
            "upc": "",
            "mpn": "",
            "gtin": "",
            "search_keywords": "",
            "availability": "available",
            "availability_description": "",
            "gift_wrapping_options_type": "any",
            "gift_wrapping_options_list": [],
            "sort_order": 0,
            "condition": "New",
            "is_condition_shown": False,
            "order_quantity_minimum": 0,
            "order_quantity_maximum": 0,
            "page_title": "",
            "meta_keywords": [],
            "meta_description": "",
            "date_created": iso_offset(int(self.p_created[pid - 1])),
            "date_modified": iso_offset(int(self.p_modified[pid - 1])),
            "view_count": r.randint(0, 5000),
            "preorder_release_date": None,
            "preorder_message": "",
            "is_preorder_only": False,
            "is_price_hidden": False,
            "price_hidden_label": "",
            "custom_url": {
                "url": f"/{adjective.lower()}-{noun.lower()}-{pid}/",
                "is_customized": False,
            },
            "base_variant_id": vids.start if len(vids) == 1 else None,
            "open_graph_type": "product",
            "open_graph_title": "",
            "open_graph_description": "",
            "open_graph_use_meta_description": True,
            "open_graph_use_product_name": True,
            "open_graph_use_image": True,
        }
        if rec["base_variant_id"] is None:
            del rec["base_variant_id"]  # integer in the spec, not nullable
        if include_variants:
            rec["variants"] = [self.variant_record(v) for v in vids]
        return rec

    # -- locations and inventory ---------------------------------------------------------

    def location_record(self, lid: int) -> dict[str, Any]:
        r = random.Random(f"{self.seed}:location:{lid}")
        city, state, _, zip_prefix, areas, cc, _ = CITIES[(lid - 1) % 16]
        hours = {"open": True, "opening": "09:00", "closing": "21:00"}
        days = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
        created = self.now_ts - 400 * DAY + lid * 3600
        return {
            "id": lid,
            "code": f"BC-LOCATION-{lid}",
            "label": "Default location" if lid == 1 else f"{city} Store",
            "description": "",
            "managed_by_external_source": False,
            "type_id": "PHYSICAL",
            "enabled": True,
            "operating_hours": {
                d: dict(hours) if d != "sunday" else {**hours, "closing": "17:00"} for d in days
            },
            "time_zone": self.timezone,
            "created_at": iso_z(created),
            "updated_at": iso_z(created + 30 * DAY),
            "address": {
                "address1": f"{r.randint(10, 999)} {r.choice(STREETS)}",
                "address2": "",
                "city": city,
                "state": state,
                "zip": f"{zip_prefix}{r.randint(1, 99):02d}",
                "email": f"store{lid}@example.com",
                "phone": _phone(r, areas),
                "geo_coordinates": {
                    "latitude": round(r.uniform(25, 48), 6),
                    "longitude": round(r.uniform(-122, -71), 6),
                },
                "country_code": cc,
            },
            "storefront_visibility": True,
            "special_hours": [],
        }

    def inventory_item(self, vid: int, location_ids: Iterable[int] | None = None) -> dict[str, Any]:
        pid = int(self.v_product[vid - 1])
        lids = list(location_ids) if location_ids is not None else range(1, self.n_locations + 1)
        locs = []
        for lid in lids:
            onhand = int(self.inv_onhand[vid - 1, lid - 1])
            locs.append(
                {
                    "location_id": lid,
                    "location_code": f"BC-LOCATION-{lid}",
                    "location_name": self.location_record(lid)["label"],
                    "available_to_sell": max(0, onhand - 2),
                    "total_inventory_onhand": onhand,
                    "location_enabled": True,
                    "settings": {
                        "safety_stock": 2,
                        "is_in_stock": onhand > 2,
                        "warning_level": 5,
                        "bin_picking_number": "",
                    },
                }
            )
        return {
            "identity": {
                "sku": self.variant_sku(vid),
                "variant_id": vid,
                "product_id": pid,
                "sku_id": vid,
            },
            "locations": locs,
        }

    # -- store ---------------------------------------------------------------------------

    def store_record(self) -> dict[str, Any]:
        tz = ZoneInfo(self.timezone)
        jan = datetime(2025, 1, 15, tzinfo=tz).utcoffset()
        jul = datetime(2025, 7, 15, tzinfo=tz).utcoffset()
        now_off = datetime.fromtimestamp(self.now_ts, tz).utcoffset()
        assert jan is not None and jul is not None and now_off is not None
        raw = int(min(jan, jul).total_seconds())
        plan = "Standard" if self.quota <= 150 else "Pro" if self.quota <= 450 else "Enterprise"
        return {
            "id": self.store_hash,
            "account_uuid": "8d4d492f-17a1-4d95-b396-e1c5720815a5",
            "domain": "sandbox-store.example.com",
            "secure_url": "https://sandbox-store.example.com",
            "control_panel_base_url": f"https://store-{self.store_hash}.mybigcommerce.com",
            "status": "live",
            "name": "Sandbox Goods",
            "first_name": "Jane",
            "last_name": "Doe",
            "address": "455 Main Street, Austin, TX 78751",
            "country": "United States",
            "country_code": "US",
            "phone": "512-482-1234",
            "admin_email": "owner@example.com",
            "order_email": "orders@example.com",
            "favicon_url": "",
            "timezone": {
                "name": self.timezone,
                "raw_offset": raw,
                "dst_offset": int(now_off.total_seconds()),
                "dst_correction": jan != jul,
                "date_format": {
                    "display": "M jS Y",
                    "export": "M jS Y",
                    "extended_display": "M jS Y @ g:i A",
                },
            },
            "language": "en",
            "currency": "USD",
            "currency_symbol": "$",
            "decimal_separator": ".",
            "thousands_separator": ",",
            "decimal_places": 2,
            "currency_symbol_location": "left",
            "weight_units": "LBS",
            "dimension_units": "Inches",
            "dimension_decimal_places": 2,
            "dimension_decimal_token": ".",
            "dimension_thousands_token": ",",
            "plan_name": plan,
            "plan_level": plan,
            "plan_is_trial": False,
            "industry": "Retail",
            "logo": [],
            "is_price_entered_with_tax": False,
            "store_id": 1000000 + (self.seed % 1000000),
            "default_channel_id": 1,
            "default_site_id": 1000,
            "active_comparison_modules": [],
            "features": {
                "stencil_enabled": True,
                "sitewidehttps_enabled": True,
                "facebook_catalog_id": "",
                "checkout_type": "optimized",
                "wishlists_enabled": False,
                "graphql_storefront_api_enabled": True,
                "shopper_consent_tracking_enabled": True,
                "multi_storefront_enabled": False,
                "storefront_limits": {"active": 1, "total_including_inactive": 1},
            },
        }

    # -- orders (v2) ---------------------------------------------------------------------

    def _line_items(self, oid: int, status: int, pickup: bool) -> list[dict[str, Any]]:
        i = oid - 1
        r = random.Random(f"{self.seed}:items:{oid}")
        base = int(self.o_item_base[i])
        items = []
        refunded_all = status == 4
        partial_k = r.randrange(int(self.o_nitems[i])) if status == 14 else -1
        shipped = status in _SHIPPED_STATUSES
        for k in range(int(self.o_nitems[i])):
            pid = r.randint(1, self.n_products)
            vids = self.variant_ids(pid)
            vid = r.randint(vids.start, vids.stop - 1)
            qty = r.choices((1, 2, 3, 4), (70, 20, 7, 3))[0]
            digital = r.random() < 0.03
            name, sku, opt, price = self._variant_info(vid)
            tax = price * _TAX_RATE_BP // 10_000
            cost = price * 45 // 100
            refunded = refunded_all or k == partial_k
            product_options = []
            if opt is not None:
                product_options.append(
                    {
                        "id": base + k,
                        "option_id": pid * 10,
                        "order_product_id": base + k,
                        "product_option_id": pid * 10,
                        "display_name": opt[0],
                        "display_name_customer": opt[0],
                        "display_name_merchant": opt[0],
                        "display_value": opt[1],
                        "display_value_customer": opt[1],
                        "display_value_merchant": opt[1],
                        "value": str(100 + vid - vids.start),
                        "type": "Multiple choice" if opt[0] == "Size" else "Swatch",
                        "name": f"{opt[0]}s",
                        "display_style": "Rectangle" if opt[0] == "Size" else "",
                    }
                )
            items.append(
                {
                    "id": base + k,
                    "order_id": oid,
                    "product_id": pid,
                    "variant_id": vid,
                    "order_pickup_method_id": 1 if pickup and not digital else 0,
                    "order_address_id": 0 if pickup or digital else oid,
                    "name": name,
                    "name_customer": name,
                    "name_merchant": name,
                    "sku": sku,
                    "upc": "",
                    "type": "digital" if digital else "physical",
                    "base_price": money(price),
                    "price_ex_tax": money(price),
                    "price_inc_tax": money(price + tax),
                    "price_tax": money(tax),
                    "base_total": money(price * qty),
                    "total_ex_tax": money(price * qty),
                    "total_inc_tax": money((price + tax) * qty),
                    "total_tax": money(tax * qty),
                    "weight": "1.0000",
                    "width": "0.0000",
                    "height": "0.0000",
                    "depth": "0.0000",
                    "quantity": qty,
                    "base_cost_price": money(cost),
                    "cost_price_inc_tax": money(cost),
                    "cost_price_ex_tax": money(cost),
                    "cost_price_tax": money(0),
                    "is_refunded": refunded,
                    "quantity_refunded": qty if refunded else 0,
                    "refund_amount": money(0),
                    "return_id": 0,
                    "wrapping_id": 0,
                    "wrapping_name": None,
                    "base_wrapping_cost": money(0),
                    "wrapping_cost_ex_tax": money(0),
                    "wrapping_cost_inc_tax": money(0),
                    "wrapping_cost_tax": money(0),
                    "wrapping_message": "",
                    "quantity_shipped": qty if shipped and not digital else 0,
                    "event_name": None,
                    "event_date": None,
                    "fixed_shipping_cost": money(0),
                    "ebay_item_id": "",
                    "ebay_transaction_id": "",
                    "option_set_id": pid * 10 if opt is not None else None,
                    "parent_order_product_id": None,
                    "is_bundled_product": False,
                    "bin_picking_number": "",
                    "external_id": None,
                    "brand": BRANDS[pid % len(BRANDS)],
                    "gift_certificate_id": None,
                    "applied_discounts": [],
                    "product_options": product_options,
                    "configurable_fields": [],
                    "discounted_total_inc_tax": money((price + tax) * qty),
                }
            )
        return items

    def order_products(self, oid: int) -> list[dict[str, Any]]:
        i = oid - 1
        return self._line_items(oid, int(self.o_status[i]), bool(self.o_pickup[i]))

    def _billing(self, oid: int) -> tuple[Person, int]:
        cid = int(self.o_customer[oid - 1])
        if cid:
            return self.customer_person(cid), cid
        r = random.Random(f"{self.seed}:guest-kind:{oid}")
        if self.n_generated_customers and r.random() < 0.12:
            # A registered shopper checking out as a guest: same email, no customer id.
            return self.customer_person(r.randint(1, self.n_generated_customers)), 0
        return _person(self.seed, "guest", oid), 0

    def order_record(
        self,
        oid: int,
        *,
        api_base: str,
        consignments: str | None = None,
        include_fees: bool = False,
    ) -> dict[str, Any]:
        """One order_Resp. ``consignments``: None, "link", "object" or "object+line_items"."""
        i = oid - 1
        status = int(self.o_status[i])
        pickup = bool(self.o_pickup[i])
        r = random.Random(f"{self.seed}:order:{oid}")
        person, cid = self._billing(oid)
        items = self._line_items(oid, status, pickup)
        physical = [it for it in items if it["type"] == "physical"]
        subtotal = sum(int(float(it["total_ex_tax"]) * 100 + 0.5) for it in items)
        item_tax = sum(int(float(it["total_tax"]) * 100 + 0.5) for it in items)
        ship = 0 if pickup or not physical else r.choice((0, 599, 999, 1499))
        ship_tax = ship * _TAX_RATE_BP // 10_000
        discount = subtotal // 10 if r.random() < 0.08 else 0
        total_ex = subtotal + ship - discount
        total_tax = item_tax + ship_tax
        total_inc = total_ex + total_tax
        refunded = 0
        if status == 4:
            refunded = total_inc
        elif status == 14:
            refunded = min(
                total_inc,
                sum(
                    int(float(it["total_inc_tax"]) * 100 + 0.5) for it in items if it["is_refunded"]
                ),
            )
        items_total = sum(it["quantity"] for it in items)
        shipped_qty = sum(it["quantity_shipped"] for it in items)
        created = int(self.o_created[i])
        modified = int(self.o_modified[i])
        shipped = status in _SHIPPED_STATUSES and physical and not pickup
        billing_phone = person.address_phone or person.phone
        if r.random() < 0.1:
            billing_phone = ""
        rec: dict[str, Any] = {
            "id": oid,
            "customer_id": cid,
            "date_created": rfc2822(created),
            "date_modified": rfc2822(modified),
            "date_shipped": rfc2822(min(modified, created + 2 * DAY)) if shipped else "",
            "status_id": status,
            "status": STATUSES[status][0],
            "subtotal_ex_tax": money(subtotal),
            "subtotal_inc_tax": money(subtotal + item_tax),
            "subtotal_tax": money(item_tax),
            "base_shipping_cost": money(ship),
            "shipping_cost_ex_tax": money(ship),
            "shipping_cost_inc_tax": money(ship + ship_tax),
            "shipping_cost_tax": money(ship_tax),
            "shipping_cost_tax_class_id": 2,
            "base_handling_cost": money(0),
            "handling_cost_ex_tax": money(0),
            "handling_cost_inc_tax": money(0),
            "handling_cost_tax": money(0),
            "handling_cost_tax_class_id": 2,
            "base_wrapping_cost": money(0),
            "wrapping_cost_ex_tax": money(0),
            "wrapping_cost_inc_tax": money(0),
            "wrapping_cost_tax": money(0),
            "wrapping_cost_tax_class_id": 3,
            "total_ex_tax": money(total_ex),
            "total_inc_tax": money(total_inc),
            "total_tax": money(total_tax),
            "is_tax_inclusive_pricing": False,
            "items_total": items_total,
            "items_shipped": shipped_qty,
            "payment_method": "Cash" if pickup and r.random() < 0.3 else "Credit Card",
            "payment_provider_id": "" if status in (0, 1) else f"ch_{r.getrandbits(48):012x}",
            "payment_status": _PAYMENT_STATUS.get(status, "captured"),
            "refunded_amount": money(refunded),
            "order_is_digital": not physical,
            "store_credit_amount": money(0),
            "gift_certificate_amount": money(0),
            "ip_address": _ip(r),
            "ip_address_v6": "",
            "geoip_country": person.country,
            "geoip_country_iso2": person.country_code,
            "currency_id": 1,
            "currency_code": "USD",
            "currency_exchange_rate": "1.0000000000",
            "default_currency_id": 1,
            "default_currency_code": "USD",
            "staff_notes": "",
            "customer_message": "",
            "discount_amount": money(discount),
            "coupon_discount": money(discount),
            "shipping_address_count": 1 if physical and not pickup else 0,
            "is_deleted": bool(self.o_deleted[i]),
            "ebay_order_id": "0",
            "cart_id": f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}"
            f"-a{r.getrandbits(12):03x}-{r.getrandbits(48):012x}",
            "billing_address": {
                "first_name": person.first_name,
                "last_name": person.last_name,
                "company": person.company,
                "street_1": person.street_1,
                "street_2": person.street_2,
                "city": person.city,
                "state": person.state,
                "zip": person.zip,
                "country": person.country,
                "country_iso2": person.country_code,
                "phone": billing_phone,
                "email": person.email,
                "form_fields": [],
            },
            "is_email_opt_in": r.random() < 0.35,
            "credit_card_type": None,
            "order_source": r.choice(("www", "www", "www", "iphone", "android", "manual")),
            "channel_id": 1,
            "external_source": None,
            "products": {
                "url": f"{api_base}v2/orders/{oid}/products",
                "resource": f"/orders/{oid}/products",
            },
            "shipping_addresses": {
                "url": f"{api_base}v2/orders/{oid}/shippingaddresses",
                "resource": f"/orders/{oid}/shippingaddresses",
            },
            "coupons": {
                "url": f"{api_base}v2/orders/{oid}/coupons",
                "resource": f"/orders/{oid}/coupons",
            },
            "external_id": None,
            "external_merchant_id": None,
            "tax_provider_id": "BasicTaxProvider",
            "customer_locale": "en",
            "external_order_id": "",
            "store_default_currency_code": "USD",
            "store_default_to_transactional_exchange_rate": "1.0000000000",
            "custom_status": STATUSES[status][0],
        }
        if consignments == "link":
            rec["consignments"] = {
                "url": f"{api_base}v2/orders/{oid}/consignments",
                "resource": f"/orders/{oid}/consignments",
            }
        elif consignments is not None:
            rec["consignments"] = self._consignments(
                oid, person, items, pickup, ship, ship_tax, api_base, consignments
            )
        if include_fees:
            rec["fees"] = []
        return rec

    def _consignments(
        self,
        oid: int,
        person: Person,
        items: list[dict[str, Any]],
        pickup: bool,
        ship: int,
        ship_tax: int,
        api_base: str,
        mode: str,
    ) -> dict[str, Any]:
        """orderConsignment_Get: every line item sits in exactly one consignment."""

        def line_items(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if mode == "object+line_items":
                return group[:50]
            return [
                {
                    "url": f"{api_base}v2/orders/{oid}/products/{it['id']}",
                    "resource": f"/orders/{oid}/products/{it['id']}",
                }
                for it in group[:50]
            ]

        def warn(consignment: dict[str, Any], group: list[dict[str, Any]]) -> dict[str, Any]:
            # The live API embeds at most 50 line items per consignment and says so.
            if len(group) > 50:
                consignment["__warning__"] = {
                    "message": "Not all line items of this consignment are returned with this "
                    "response, only 50 are included. Please use the "
                    "`/v2/orders/{order_id}/products` endpoint to fetch all line items."
                }
            return consignment

        physical = [it for it in items if it["type"] == "physical"]
        digital = [it for it in items if it["type"] != "physical"]
        out: dict[str, Any] = {
            "pickups": [],
            "shipping": [],
            "downloads": [],
            "email": {"gift_certificates": []},
        }
        if physical and pickup:
            lid = 1 + oid % self.n_locations
            loc = self.location_record(lid)
            addr = loc["address"]
            pickup_c = {
                "id": oid,
                "pickup_method_id": 1,
                "pickup_method_display_name": "Pick up in store",
                "collection_instructions": "Bring your ID and order number.",
                "collection_time_description": "Ready within 2 hours",
                "location": {
                    "id": lid,
                    "name": loc["label"],
                    "code": loc["code"],
                    "address_line_1": addr["address1"],
                    "address_line_2": addr["address2"],
                    "city": addr["city"],
                    "state": addr["state"],
                    "postal_code": addr["zip"],
                    "country_alpha2": addr["country_code"],
                    "email": addr["email"],
                    "phone": addr["phone"],
                },
                "line_items": line_items(physical),
            }
            out["pickups"].append(warn(pickup_c, physical))
        elif physical:
            shipping_c = {
                "id": oid,
                "first_name": person.first_name,
                "last_name": person.last_name,
                "company": person.company,
                "street_1": person.street_1,
                "street_2": person.street_2,
                "city": person.city,
                "state": person.state,
                "zip": person.zip,
                "country": person.country,
                "country_iso2": person.country_code,
                "email": person.email,
                "phone": person.address_phone,
                "form_fields": [],
                "shipping_method": "Free Shipping" if ship == 0 else "Flat Rate",
                "line_items": line_items(physical),
                "items_total": sum(it["quantity"] for it in physical),
                "items_shipped": sum(it["quantity_shipped"] for it in physical),
                "base_cost": ship / 100,
                "cost_ex_tax": ship / 100,
                "cost_inc_tax": (ship + ship_tax) / 100,
                "cost_tax": ship_tax / 100,
                "cost_tax_class_id": 2,
                "base_handling_cost": 0,
                "handling_cost_ex_tax": 0,
                "handling_cost_inc_tax": 0,
                "handling_cost_tax": 0,
                "handling_cost_tax_class_id": 2,
                "shipping_zone_id": 1 if person.country_code == "US" else 2,
                "shipping_zone_name": person.country,
                "shipping_quotes": {
                    "url": f"{api_base}v2/orders/{oid}/consignments/shipping/{oid}/shipping_quotes",
                    "resource": f"/orders/{oid}/consignments/shipping/{oid}/shipping_quotes",
                },
            }
            out["shipping"].append(warn(shipping_c, physical))
        if digital:
            out["downloads"].append(
                warn({"recipient_email": person.email, "line_items": line_items(digital)}, digital)
            )
        return out

    def bump_orders(self, oids: Iterable[int], ts: int) -> None:
        with self.lock:
            for oid in oids:
                self.o_modified[oid - 1] = ts
            self.mutate()

    def bump_customers(self, cids: Iterable[int], ts: int) -> None:
        with self.lock:
            for cid in cids:
                self.c_modified[cid - 1] = ts
                if cid in self.created_customers:
                    self.created_customers[cid]["date_modified"] = iso_z(ts)
            self.mutate()

    def status_counts(self, ids: np.ndarray) -> list[dict[str, Any]]:
        counts = np.bincount(self.o_status[ids - 1], minlength=15) if len(ids) else np.zeros(15)
        out = []
        for order, sid in enumerate(STATUS_SORT_ORDER):
            out.append(
                {
                    "id": sid,
                    "name": STATUSES[sid][0],
                    "system_label": STATUSES[sid][0],
                    "custom_label": STATUSES[sid][0],
                    "system_description": STATUS_DESCRIPTIONS[sid],
                    "count": int(counts[sid]),
                    "sort_order": order,
                }
            )
        return out

"""Deterministic generator of realistic POS flat-file drops ("daily CSV drops").

One file per day, ``sales_YYYY-MM-DD.csv``, following the flat-file contract of
``/work/shared/reference/README.md`` (one header row, one line per sold item). The output is
byte-for-byte deterministic for a given :class:`DropSpec`: every random choice comes from
``random.Random`` instances seeded from ``spec.seed`` (never the global RNG, never the clock).

The generator deliberately includes the hazards a loader has to survive, and records the ground
truth in a :class:`DropReport` while generating (not by re-reading the files):

* three mapped stores plus one location the demo config leaves unmapped (a pop-up kiosk);
* refunds in a later day's file (new TransactionID, ``TransactionRefundID`` = the original),
  some with negative quantities and amounts, some with positive ones;
* rows re-sent verbatim at the top of the next day's file (idempotency by (TransactionID, Item ID));
* bad rows (unparseable date, non-numeric money, missing TransactionID, missing Patient Number,
  too many columns) spread over a few files, each recorded as (file, 1-based line, keyword);
* format variety: UTF-8 BOM, CRLF line endings, the newer template with misspelled headers
  (``TransacitonID``, ``TransacitonRefundID``, ``LocaitonID``), a different column order and
  unknown extra columns, ``YYYY-MM-DD`` transaction dates;
* customer PII variety: names and addresses with commas and quotes, non-ASCII names, ZIP codes with
  leading zeros, ZIP+4 and Canadian postal codes, birth dates in ``Patient Age`` (a few under 21),
  valid / mixed-case / invalid / blank emails, valid US / Canadian / toll-free / invalid / blank
  phones, and a few duplicate patient records of the same person (same phone and email).

Usage::

    python -m examples.generate_drops --out examples/drops [--days 90 --customers 2400 ...]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path

# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------

CANONICAL_COLUMNS: tuple[str, ...] = (
    "TransactionID",
    "TransactionRefundID",
    "Patient Number",
    "LocationID",
    "Order Type",
    "Item ID",
    "ProductName",
    "Product Category Name",
    "VendorName",
    "InventoryQuantity",
    "Agg - Product Sales (subtotal)",
    "AllocatedTax",
    "Product Discount",
    "AllocatedPrice",
    "TransactionDate",
    "Completed Time",
    "Patient Postal Code",
    "Patient Address",
    "Patient Name",
    "Patient email",
    "Patient Phone Default",
    "Patient Age",
    "Facility Name",
)

#: Canonical column -> the (misspelled) header used by the newer POS template.
MISSPELLED_HEADERS: dict[str, str] = {
    "TransactionID": "TransacitonID",
    "TransactionRefundID": "TransacitonRefundID",
    "LocationID": "LocaitonID",
}

MONEY_COLUMNS: tuple[str, ...] = (
    "Agg - Product Sales (subtotal)",
    "AllocatedTax",
    "Product Discount",
    "AllocatedPrice",
)

#: Column order of the newer template (canonical names; headers are misspelled when written).
NEW_TEMPLATE_COLUMNS: tuple[str, ...] = (
    "TransactionDate",
    "Completed Time",
    "TransactionID",
    "TransactionRefundID",
    "LocationID",
    "Facility Name",
    "Order Type",
    "Patient Number",
    "Patient Name",
    "Patient Phone Default",
    "Patient email",
    "Patient Age",
    "Patient Address",
    "Patient Postal Code",
    "Item ID",
    "ProductName",
    "Product Category Name",
    "VendorName",
    "InventoryQuantity",
    "Agg - Product Sales (subtotal)",
    "Product Discount",
    "AllocatedPrice",
    "AllocatedTax",
    "Budtender Name",
    "Loyalty Points Earned",
)

#: Unknown columns some files carry; a loader must ignore them.
EXTRA_COLUMNS: tuple[str, ...] = ("Budtender Name", "Loyalty Points Earned", "Register")

# Reason keywords recorded in DropReport.bad_lines.
BAD_DATE = "bad_date"  # TransactionDate present but unparseable (e.g. 2026/13/45)
BAD_MONEY = "bad_money"  # one money column is non-numeric (e.g. 12,5x)
MISSING_TRANSACTION_ID = "missing_transaction_id"  # TransactionID blank
MISSING_PATIENT_NUMBER = "missing_patient_number"  # Patient Number blank
EXTRA_COLUMNS_REASON = "extra_columns"  # more cells than header columns (unquoted commas)
BAD_REASONS: tuple[str, ...] = (
    BAD_DATE,
    BAD_MONEY,
    MISSING_TRANSACTION_ID,
    MISSING_PATIENT_NUMBER,
    EXTRA_COLUMNS_REASON,
)

FILE_NAME_RE = re.compile(r"sales_\d{4}-\d{2}-\d{2}\.csv")

# --------------------------------------------------------------------------------------------
# Spec and report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """A POS location. ``region`` picks the home addresses / area codes of its regulars."""

    location_id: str
    facility_name: str
    region: str
    tax_bp: int  # tax rate in basis points applied to AllocatedPrice (2375 = 23.75 %)
    weight: float = 1.0  # share of the customers whose home store this is


DEFAULT_STORES: tuple[Store, ...] = (
    Store("101", "Green Leaf - Midtown Sacramento", "sacramento", 2375, 0.45),
    Store("102", "Green Leaf - Mission SF", "sf", 2450, 0.35),
    Store("205", "Green Leaf - Pearl Portland", "portland", 2000, 0.20),
)
DEFAULT_UNMAPPED_STORE = Store("99", "Popup Kiosk", "sacramento", 1500, 0.0)
DEFAULT_END_DATE = date(2026, 10, 31)


@dataclass(frozen=True)
class DropSpec:
    """What to generate. Every field has a demo-size default; the output depends only on it."""

    days: int = 90
    customers: int = 2400
    lines_target: int = 24000  # approx total good, unique item lines (sales + refunds)
    end_date: date = DEFAULT_END_DATE  # last file's day; fixed so the output is deterministic
    seed: int = 7
    stores: tuple[Store, ...] = DEFAULT_STORES  # mapped in the demo config
    unmapped_store: Store = DEFAULT_UNMAPPED_STORE  # left unmapped by the demo config
    unmapped_transactions: int = 8  # a handful of pop-up kiosk sales (on one weekend)
    catalog_size: int = 300
    refund_rate: float = 0.03  # share of sales transactions refunded in a later file
    duplicate_rate: float = 0.02  # share of a file's good lines re-sent in the next file
    bad_lines: int = 36  # total bad rows ...
    bad_files: int = 5  # ... spread over this many files
    inactive_customer_rate: float = 0.07  # customers with no sale in the window
    alias_customer_rate: float = 0.01  # extra patient records of an existing person


@dataclass
class DropReport:
    """Ground truth recorded while generating. File names are relative to ``out_dir``."""

    out_dir: str
    files: list[str]  # sales_YYYY-MM-DD.csv, in date order, one per day
    first_date: date
    last_date: date
    rows_written: int  # physical data rows (good + duplicate + bad), headers excluded
    good_lines: int  # unique valid (TransactionID, Item ID) lines, sales + refunds
    sale_lines: int
    refund_lines: int
    transactions: int  # distinct valid TransactionIDs, sales + refunds
    refund_transactions: int
    negative_quantity_refund_transactions: int  # refunds written with negative qty and amounts
    refunded_transaction_ids: list[str]  # the originals (TransactionRefundID values)
    customers_total: int  # patient records generated (including ones with no sale)
    customers_with_sales: int  # distinct Patient Numbers on good lines
    multi_store_customers: int  # customers with good lines at 2+ LocationIDs
    under_21_customers_with_sales: int  # by Patient Age (birth date) as of last_date
    duplicate_lines: int  # good lines re-sent verbatim in the next day's file
    duplicate_lines_by_file: dict[str, int]  # file -> re-sent rows at its top
    bad_lines: list[tuple[str, int, str]]  # (file, 1-based physical line, reason keyword)
    mapped_location_ids: list[str]
    unmapped_location_ids: list[str]
    location_names: dict[str, str]  # LocationID -> Facility Name
    lines_per_location: dict[str, int]  # good lines per LocationID
    transactions_per_location: dict[str, int]
    customers_per_location: dict[str, int]  # distinct customers with good lines there
    sales_allocated_price_cents: int  # sum of AllocatedPrice over non-refund good lines
    refund_allocated_price_cents: int  # sum of |AllocatedPrice| over refund good lines
    last_sale_date_by_customer: dict[str, date]  # Patient Number -> last non-refund sale day
    phone_kind_by_customer: dict[str, str]  # customers with sales -> PHONE_KINDS value
    email_kind_by_customer: dict[str, str]  # customers with sales -> EMAIL_KINDS value
    alias_patient_numbers: dict[str, str]  # alias Patient Number -> original (same person)
    files_with_bom: list[str] = field(default_factory=list)
    files_with_crlf: list[str] = field(default_factory=list)
    files_with_misspelled_headers: list[str] = field(default_factory=list)
    files_with_iso_dates: list[str] = field(default_factory=list)
    files_with_extra_columns: list[str] = field(default_factory=list)
    files_with_reordered_columns: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.files)} files ({self.first_date}..{self.last_date}) in {self.out_dir}: "
            f"{self.good_lines} good lines, {self.transactions} transactions "
            f"({self.refund_transactions} refunds), {self.customers_with_sales} customers with "
            f"sales, {self.duplicate_lines} duplicate lines, {len(self.bad_lines)} bad lines, "
            f"unmapped locations {','.join(self.unmapped_location_ids) or '-'}"
        )


#: Phone kinds: valid US 10 digits, valid US with a leading 1, Canadian, toll-free (valid but
#: cannot receive SMS), invalid (must become blank), blank.
PHONE_KINDS: tuple[str, ...] = ("us", "us_leading_1", "canada", "toll_free", "invalid", "blank")
#: Email kinds: valid lower case, valid mixed case, syntactically invalid, blank.
EMAIL_KINDS: tuple[str, ...] = ("valid", "mixed_case", "invalid", "blank")

# --------------------------------------------------------------------------------------------
# Static data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Region:
    cities: tuple[tuple[str, str, str], ...]  # (city, state/province, ZIP prefix or postal letter)
    area_codes: tuple[str, ...]
    canadian: bool = False


REGIONS: dict[str, _Region] = {
    "sacramento": _Region(
        (
            ("Sacramento", "CA", "958"),
            ("Elk Grove", "CA", "957"),
            ("Roseville", "CA", "956"),
            ("Davis", "CA", "956"),
            ("Folsom", "CA", "956"),
        ),
        ("916", "279", "530"),
    ),
    "sf": _Region(
        (
            ("San Francisco", "CA", "941"),
            ("Oakland", "CA", "946"),
            ("Daly City", "CA", "940"),
            ("Berkeley", "CA", "947"),
        ),
        ("415", "628", "510", "650"),
    ),
    "portland": _Region(
        (
            ("Portland", "OR", "972"),
            ("Beaverton", "OR", "970"),
            ("Gresham", "OR", "970"),
            ("Vancouver", "WA", "986"),
        ),
        ("503", "971", "360"),
    ),
    "la": _Region(
        (("Los Angeles", "CA", "900"), ("Santa Monica", "CA", "904"), ("Pasadena", "CA", "911")),
        ("213", "310", "323", "626"),
    ),
    "east": _Region(  # ZIP codes with leading zeros
        (("Boston", "MA", "021"), ("Hoboken", "NJ", "070"), ("Providence", "RI", "029")),
        ("617", "201", "401"),
    ),
    "bc": _Region((("Vancouver", "BC", "V"), ("Burnaby", "BC", "V")), ("604", "778"), True),
    "on": _Region((("Toronto", "ON", "M"),), ("416", "647"), True),
}

# fmt: off
FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony",
    "Sandra", "Mark", "Ashley", "Donald", "Kimberly", "Steven", "Emily", "Andrew", "Donna",
    "Joshua", "Michelle", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa", "Timothy",
    "Deborah", "Ryan", "Stephanie", "Jacob", "Rebecca", "Gary", "Laura", "Nicholas", "Sharon",
    "Eric", "Cynthia", "Jonathan", "Kathleen", "Justin", "Amy", "Brandon", "Angela", "Tyler",
    "Anna", "Aaron", "Maya", "Luis", "Priya", "Wei", "Mei", "Hiroshi", "Aisha", "Omar", "Fatima",
    "José", "Zoë", "Renée", "Björn", "Chloé", "Ngọc", "Siobhán", "Mateo", "Camila", "Dmitri",
)
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
    "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera",
    "Campbell", "Mitchell", "Carter", "Roberts", "Chen", "Kim", "Patel", "Singh", "Tanaka",
    "O'Brien", "O'Connor", "McDonald", "Smith-Jones", "de la Cruz", "Van Der Berg", "García",
    "Nguyễn", "Müller", "Łukasz", "Peña", "Søndergaard", "St. James", "MacLeod", "D'Angelo",
)
NAME_SUFFIXES: tuple[str, ...] = ("Jr.", "Sr.", "II", "III")
NICKNAMES: tuple[str, ...] = ("Bobby", "Red", "Ace", "Doc", "Skip", "Sunny")
STREETS: tuple[str, ...] = (
    "Oak", "Maple", "Cedar", "Pine", "Elm", "Walnut", "Main", "Broadway", "Capitol", "Alhambra",
    "Folsom", "Mission", "Valencia", "Hawthorne", "Burnside", "Division", "Alberta", "Belmont",
    "Sunset", "Lincoln", "Washington", "Jefferson", "Madison", "Highland", "Park", "Lake",
    "Hillcrest", "Riverside", "Franklin", "Grand",
)
STREET_TYPES: tuple[str, ...] = ("St", "Ave", "Blvd", "Way", "Dr", "Ct", "Ln", "Pl")
# fmt: on
EMAIL_DOMAINS: tuple[tuple[str, float], ...] = (
    ("gmail.com", 45),
    ("yahoo.com", 15),
    ("outlook.com", 9),
    ("icloud.com", 10),
    ("hotmail.com", 7),
    ("comcast.net", 4),
    ("aol.com", 3),
    ("proton.me", 3),
    ("sbcglobal.net", 4),
)
INVALID_PHONES: tuple[str, ...] = ("1234567890", "5551234567", "0000000000", "123456")
TOLL_FREE_PREFIXES: tuple[str, ...] = ("800", "888", "877", "866", "855")
BAD_DATE_VALUES: tuple[str, ...] = ("2026/13/45", "2026/02/30", "2026-00-12", "20261045", "N/A")
BAD_MONEY_VALUES: tuple[str, ...] = ("12,5x", "1O.99", "#VALUE!", "1.2.3", "n/a", "$$4")

# fmt: off
STRAINS: tuple[str, ...] = (
    "Blue Dream", "OG Kush", "Sour Diesel", "Girl Scout Cookies", "Gelato", "Wedding Cake",
    "Pineapple Express", "Granddaddy Purple", "Jack Herer", "Northern Lights", "Zkittlez", "Runtz",
    "Mimosa", "Ice Cream Cake", "Durban Poison", "Green Crack", "Lemon Haze", "Purple Punch",
    "Sunset Sherbet", "Tangie", "Skywalker OG", "Super Lemon Haze", "Trainwreck", "White Widow",
    "Apple Fritter", "Biscotti", "Cereal Milk", "Do-Si-Dos", "Forbidden Fruit", "Gary Payton",
    "Jealousy", "Khalifa Kush", "London Pound Cake", "MAC", "Papaya", "Permanent Marker",
    "Slurricane", "Strawberry Cough", "Tropicana Cookies", "Animal Mints",
)
FLAVORS: tuple[str, ...] = (
    "Watermelon", "Blue Raspberry", "Sour Apple", "Mango", "Peach", "Black Cherry",
    "Dark Chocolate", "Milk Chocolate", "Lemonade", "Pink Lemonade", "Tangerine", "Wild Berry",
    "Strawberry Lemonade", "Pomegranate", "Cool Mint",
)
# fmt: on
SCENTS: tuple[str, ...] = ("Lavender", "Eucalyptus", "Unscented", "Peppermint", "Citrus")
COLORS: tuple[str, ...] = ("Black", "Blue", "Green", "Clear", "Rainbow", "Pink")

# category -> (share of the catalog, vendors, forms, (min, max) whole-dollar price, max qty)
CATEGORIES: dict[str, tuple[int, tuple[str, ...], tuple[str, ...], tuple[int, int], int]] = {
    "Flower": (
        75,
        ("Golden Valley Farms", "Emerald Ridge", "Sunset Canopy", "Humboldt Heritage"),
        ("3.5g", "3.5g", "7g", "14g", "28g", "Smalls 7g"),
        (25, 55),
        2,
    ),
    "Vapes": (
        60,
        ("Cloud Nine Extracts", "Pacific Vapor", "Stratus Labs", "Aether Pens"),
        ("Cartridge 0.5g", "Cartridge 1g", "All-In-One 1g", "Pod 0.5g", "Live Resin Cart 1g"),
        (25, 65),
        2,
    ),
    "Edibles": (
        54,
        ("Happy Valley Confections", "Mellow Bites", "Grove & Co.", "Leaf, Stem & Root Co."),
        (
            "Gummies 100mg",
            "Gummies 10pk 100mg",
            "Chocolate Bar 100mg",
            "Mints 100mg",
            "Seltzer 10mg",
            "Chews, 20pk 100mg",
        ),
        (12, 30),
        3,
    ),
    "Pre-Rolls": (
        51,
        ("Golden Valley Farms", "Twisted Roots", "Emerald Ridge", "Jointly Rolled"),
        ("Pre-Roll 1g", "Pre-Roll 3pk 1.5g", "Infused Pre-Roll 1g", "Mini Dogs 5pk 2.5g"),
        (8, 45),
        3,
    ),
    "Concentrates": (
        30,
        ("Alchemy Extracts", "Sierra Resin Co.", "Stratus Labs"),
        (
            "Live Resin 1g",
            "Badder 1g",
            "Live Rosin 1g",
            "Shatter 1g",
            "THCa Diamonds 1g",
            "Sugar 1g",
        ),
        (30, 80),
        2,
    ),
    "Topicals": (
        15,
        ("Soothe Botanicals", "Calm Rx Wellness"),
        (
            "Relief Balm 500mg",
            "CBD:THC 1:1 Lotion 4oz",
            "Bath Soak 100mg",
            "Transdermal Patch 20mg",
            "Cooling Roll-On 300mg",
            "Massage Oil 200mg",
        ),
        (15, 60),
        1,
    ),
    "Accessories": (
        15,
        ("Puff Supply", "Raw Edge Papers", "Glassworks PDX"),
        (
            'Glass Pipe 4"',
            'Glass Pipe 6"',
            "Rolling Papers 1 1/4",
            "Rolling Papers King Size",
            "Hemp Wick 10ft",
            'Grinder 4pc 2.5"',
            "Lighter",
            "510 Battery",
            "Rolling Tray, Small",
            "Rolling Tray, Large",
            "Stash Jar",
            "Dab Tool",
            "Silicone Container",
            "Cone Filler",
        ),
        (2, 45),
        1,
    ),
}

# forms whose whole-dollar price range differs from their category's
FORM_PRICES: dict[str, tuple[int, int]] = {
    "7g": (45, 90),
    "Smalls 7g": (30, 50),
    "14g": (80, 150),
    "28g": (120, 250),
    "Pre-Roll 1g": (8, 15),
    "Pre-Roll 3pk 1.5g": (15, 30),
    "Infused Pre-Roll 1g": (15, 25),
    "Seltzer 10mg": (5, 10),
    "Lighter": (2, 5),
    "Rolling Papers 1 1/4": (2, 6),
    "Rolling Papers King Size": (2, 6),
    "Hemp Wick 10ft": (3, 8),
}

BUDTENDERS: tuple[str, ...] = ("Alex R.", "Sam T.", "Jordan K.", "Casey M.", "Riley P.", "Drew B.")
ORDER_TYPES: tuple[tuple[str, float], ...] = (("In Store", 70), ("Pickup", 20), ("Delivery", 10))
LINES_PER_TXN: tuple[tuple[int, float], ...] = ((1, 28), (2, 27), (3, 20), (4, 12), (5, 8), (6, 5))
WEEKDAY_WEIGHTS: tuple[float, ...] = (0.80, 0.85, 0.90, 1.00, 1.30, 1.35, 1.00)  # Mon..Sun
# fmt: off
HOUR_WEIGHTS: tuple[tuple[int, float], ...] = (
    (9, 3), (10, 5), (11, 6), (12, 8), (13, 7), (14, 7), (15, 8), (16, 10), (17, 12), (18, 11),
    (19, 9), (20, 7), (21, 4),
)
# fmt: on

# --------------------------------------------------------------------------------------------
# Internal model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Product:
    item_id: str
    name: str
    category: str
    vendor: str
    price_cents: int
    max_qty: int


@dataclass(frozen=True)
class _Customer:
    patient_number: str
    first: str
    last: str
    name: str
    address: str
    postal_code: str
    email: str
    email_kind: str
    phone: str
    phone_kind: str
    birth: date | None
    home: int  # index into spec.stores
    region: str


@dataclass
class _Line:
    product: _Product
    qty: int
    subtotal: int  # cents
    discount: int  # cents


@dataclass
class _Txn:
    seq: int  # creation order; tie-breaker for sorting
    day: int  # index into the day list
    seconds: int  # seconds after midnight (local time)
    customer: _Customer
    store: Store
    order_type: str
    lines: list[_Line]
    refund_of: _Txn | None = None
    negative: bool = False  # refund written with negative quantities and amounts
    bad_reason: str = ""  # non-empty for a synthetic bad row
    bad_detail: str = ""  # the broken value / the field to split for extra columns
    tid: str = ""


@dataclass
class _Row:
    values: dict[str, str]
    bad_reason: str = ""
    split_field: str = ""  # for extra-columns rows: cell written unquoted with its commas
    is_duplicate: bool = False


@dataclass(frozen=True)
class _FileFormat:
    columns: tuple[str, ...]  # canonical names and extra (unknown) column names, in file order
    misspelled: bool
    bom: bool
    crlf: bool
    iso_dates: bool
    reordered: bool

    @property
    def extra_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c in EXTRA_COLUMNS)

    def header(self) -> list[str]:
        if not self.misspelled:
            return list(self.columns)
        return [MISSPELLED_HEADERS.get(c, c) for c in self.columns]


def _rng(spec: DropSpec, purpose: str) -> random.Random:
    """An independent, deterministic stream per generation phase (str seeds are hashed stably)."""
    return random.Random(f"aiq-sync-drops:{spec.seed}:{purpose}")


def _cum(weights: Sequence[float]) -> list[float]:
    return list(accumulate(weights))


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _tax(cents: int, tax_bp: int) -> int:
    magnitude = (abs(cents) * tax_bp + 5000) // 10000
    return -magnitude if cents < 0 else magnitude


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z]", "", folded)


def _age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def _file_formats(spec: DropSpec, rng: random.Random) -> list[_FileFormat]:
    n = spec.days
    switch = n - max(1, n // 3) if n >= 3 else n  # the newer template for the last third
    flags: list[dict[str, bool]] = []
    for i in range(n):
        flags.append(
            {
                "new": i >= switch,
                "bom": rng.random() < 0.12,
                "crlf": rng.random() < 0.15,
                "iso": rng.random() < 0.10,
                "extra": rng.random() < 0.12,
                "reorder": rng.random() < 0.06,
            }
        )
    if n >= 3:  # small specs still get every format hazard at least once
        for key in ("bom", "crlf", "iso"):
            if not any(f[key] for f in flags):
                flags[rng.randrange(n)][key] = True
        legacy = [i for i in range(n) if not flags[i]["new"]]
        if not any(flags[i]["extra"] for i in legacy):
            flags[rng.choice(legacy)]["extra"] = True
    formats: list[_FileFormat] = []
    for f in flags:
        if f["new"]:
            columns = NEW_TEMPLATE_COLUMNS
            reordered = True
        else:
            cols = list(CANONICAL_COLUMNS)
            reordered = f["reorder"]
            if reordered:
                rng.shuffle(cols)
            if f["extra"]:
                cols.insert(rng.randint(0, len(cols)), "Register")
            columns = tuple(cols)
        formats.append(_FileFormat(columns, f["new"], f["bom"], f["crlf"], f["iso"], reordered))
    return formats


def _make_catalog(spec: DropSpec, rng: random.Random) -> tuple[list[_Product], list[float]]:
    total_share = sum(c[0] for c in CATEGORIES.values())
    ids = rng.sample(range(10000, 100000), spec.catalog_size)
    products: list[_Product] = []
    names: set[str] = set()
    cats = list(CATEGORIES.items())
    counts = [max(1, round(spec.catalog_size * c[0] / total_share)) for _, c in cats]
    while sum(counts) > spec.catalog_size and max(counts) > 1:
        counts[counts.index(max(counts))] -= 1
    while sum(counts) < spec.catalog_size:
        counts[0] += 1
    for (category, (_, vendors, forms, (lo, hi), max_qty)), count in zip(cats, counts, strict=True):
        made = 0
        attempts = 0
        while made < count:
            attempts += 1
            vendor = rng.choice(vendors)
            form = rng.choice(forms)
            if category in ("Flower", "Vapes", "Pre-Rolls", "Concentrates"):
                core = f"{rng.choice(STRAINS)} {form}"
            elif category == "Edibles":
                core = f"{rng.choice(FLAVORS)} {form}"
            elif category == "Topicals":
                core = f"{rng.choice(SCENTS)} {form}"
            else:
                core = f"{form} - {rng.choice(COLORS)}"
            name = f"{vendor} {core}"
            if name in names and attempts < 50 * count:
                continue
            if name in names:
                name = f"{name} ({made + 1})"
            names.add(name)
            low, high = FORM_PRICES.get(form, (lo, hi))
            price = rng.randint(low, high) * 100 + rng.choice((0, 0, 0, 50, -1))
            products.append(
                _Product(str(ids[len(products)]), name, category, vendor, max(price, 99), max_qty)
            )
            made += 1
    rng.shuffle(products)
    popularity = [1.0 / (rank + 8) for rank in range(len(products))]
    return products, _cum(popularity)


def _postal_code(rng: random.Random, region: _Region, prefix: str) -> str:
    if region.canadian:
        letters = "ABCEGHJKLMNPRSTVWXYZ"
        return (
            f"{prefix}{rng.randint(1, 9)}{rng.choice(letters)} "
            f"{rng.randint(0, 9)}{rng.choice(letters)}{rng.randint(0, 9)}"
        )
    zip5 = f"{prefix}{rng.randint(0, 99):02d}"
    return f"{zip5}-{rng.randint(0, 9999):04d}" if rng.random() < 0.08 else zip5


def _valid_local_number(rng: random.Random, area_code: str) -> str:
    while True:
        exchange = rng.randint(200, 999)
        if exchange != 555 and exchange % 100 != 11:  # no fictional 555, no N11 service codes
            return f"{area_code}{exchange}{rng.randint(0, 9999):04d}"


def _make_customers(spec: DropSpec, rng: random.Random) -> tuple[list[_Customer], dict[str, str]]:
    n_alias = min(int(spec.customers * spec.alias_customer_rate), spec.customers // 2)
    n_people = spec.customers - n_alias
    numbers = [str(n) for n in rng.sample(range(100000, 1000000), spec.customers)]
    store_cum = _cum([s.weight for s in spec.stores])
    domains, domain_weights = zip(*EMAIL_DOMAINS, strict=True)
    domain_cum = _cum(domain_weights)
    used_phones: set[str] = set()
    used_emails: set[str] = set()
    customers: list[_Customer] = []
    for i in range(n_people):
        home = rng.choices(range(len(spec.stores)), cum_weights=store_cum)[0]
        roll = rng.random()
        if roll < 0.05:
            region_key = "la"
        elif roll < 0.065:
            region_key = "east"
        elif roll < 0.095:
            region_key = rng.choice(("bc", "on"))
        else:
            region_key = spec.stores[home].region
        region = REGIONS.get(region_key, REGIONS["sacramento"])
        city, state, prefix = rng.choice(region.cities)

        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
        style = rng.random()
        if style < 0.04:
            name = f"{first} {last}, {rng.choice(NAME_SUFFIXES)}"
        elif style < 0.07:
            name = f"{last}, {first}"
        elif style < 0.08:
            name = f'{first} "{rng.choice(NICKNAMES)}" {last}'
        elif style < 0.10:
            name = f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
        else:
            name = f"{first} {last}"

        if rng.random() < 0.04:
            address = ""
        else:
            street = f"{rng.randint(10, 9999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"
            if rng.random() < 0.35:
                street += rng.choice(
                    (
                        f", Apt {rng.randint(1, 40)}{rng.choice('ABCD')}",
                        f", Unit {rng.randint(1, 300)}",
                        f", #{rng.randint(100, 999)}",
                    )
                )
            address = f"{street}, {city}, {state}"
        postal = _postal_code(rng, region, prefix)

        # phone
        roll = rng.random()
        if region.canadian:
            phone_kind = "canada" if roll < 0.9 else "blank"
        elif roll < 0.09:
            phone_kind = "blank"
        elif roll < 0.11:
            phone_kind = "invalid"
        elif roll < 0.12:
            phone_kind = "toll_free"
        elif roll < 0.14:
            phone_kind = "us_leading_1"
        else:
            phone_kind = "us"
        phone = ""
        if phone_kind == "invalid":
            phone = rng.choice(INVALID_PHONES)
        elif phone_kind == "toll_free":
            phone = f"{rng.choice(TOLL_FREE_PREFIXES)}555{rng.randint(100, 199):04d}"
        elif phone_kind in ("us", "us_leading_1", "canada"):
            while not phone or phone in used_phones:
                phone = _valid_local_number(rng, rng.choice(region.area_codes))
            used_phones.add(phone)
            if phone_kind == "us_leading_1":
                phone = "1" + phone

        # email
        roll = rng.random()
        a_first, a_last = _ascii(first).lower() or "user", _ascii(last).lower() or "shopper"
        if roll < 0.10:
            email_kind, email = "blank", ""
        elif roll < 0.125:
            email_kind = "invalid"
            email = rng.choice(
                (
                    f"{a_first}@",
                    f"{a_first}.{a_last}@gmail",
                    f"{a_first}@@yahoo.com",
                    f"{a_first} {a_last}@gmail.com",
                    "none",
                )
            )
        else:
            domain = rng.choices(domains, cum_weights=domain_cum)[0]
            local = rng.choice(
                (
                    f"{a_first}.{a_last}",
                    f"{a_first}{a_last}",
                    f"{a_first}_{a_last}",
                    f"{a_first[0]}{a_last}",
                    f"{a_first}{rng.randint(1, 99)}",
                )
            )
            if rng.random() < 0.4:
                local += str(rng.randint(1, 1999))
            while f"{local}@{domain}" in used_emails:
                local += str(rng.randint(0, 9))
            used_emails.add(f"{local}@{domain}")
            if rng.random() < 0.14:
                email_kind = "mixed_case"
                email = f"{local.title()}@{domain.capitalize()}"
            else:
                email_kind, email = "valid", f"{local}@{domain}"

        # birth date (as of the last day): mostly adults, a few 18-20, some blank
        roll = rng.random()
        birth: date | None
        if roll < 0.02:
            birth = None
        elif roll < 0.035:
            birth = spec.end_date - timedelta(days=rng.randint(18 * 366, 21 * 365 - 5))
        else:
            years = rng.triangular(21.05, 84.0, 31.0)
            birth = spec.end_date - timedelta(days=int(years * 365.25))
            while _age_on(birth, spec.end_date) < 21:
                birth -= timedelta(days=365)
        customers.append(
            _Customer(
                numbers[i],
                first,
                last,
                name,
                address,
                postal,
                email,
                email_kind,
                phone,
                phone_kind,
                birth,
                home,
                region_key,
            )
        )

    # duplicate patient records of the same person (same PII, another Patient Number)
    aliases: dict[str, str] = {}
    reachable = [c for c in customers if c.phone_kind == "us" and c.email_kind == "valid"]
    for j, original in enumerate(rng.sample(reachable, min(n_alias, len(reachable)))):
        alias = _Customer(
            numbers[n_people + j],
            original.first,
            original.last,
            original.name,
            original.address,
            original.postal_code,
            original.email,
            original.email_kind,
            original.phone,
            original.phone_kind,
            original.birth,
            original.home,
            original.region,
        )
        customers.append(alias)
        aliases[alias.patient_number] = original.patient_number
    return customers, aliases


def _make_lines(
    rng: random.Random, catalog: list[_Product], catalog_cum: list[float], count: int
) -> list[_Line]:
    chosen: list[_Product] = []
    while len(chosen) < count:
        product = rng.choices(catalog, cum_weights=catalog_cum)[0]
        if product not in chosen:
            chosen.append(product)
    lines: list[_Line] = []
    for product in chosen:
        qty = 1
        if product.max_qty > 1 and rng.random() < 0.2:
            qty = rng.randint(2, product.max_qty)
        subtotal = product.price_cents * qty
        discount = 0
        roll = rng.random()
        if roll < 0.14:
            discount = subtotal * rng.choice((10, 15, 20, 25, 30)) // 100
        elif roll < 0.18:
            discount = min(500, subtotal // 2)
        lines.append(_Line(product, qty, subtotal, discount))
    return lines


def _random_seconds(rng: random.Random, hours: list[int], hour_cum: list[float]) -> int:
    hour = rng.choices(hours, cum_weights=hour_cum)[0]
    return hour * 3600 + rng.randrange(3600)


def _make_sales(
    spec: DropSpec,
    rng: random.Random,
    dates: list[date],
    customers: list[_Customer],
    aliases: dict[str, str],
    catalog: list[_Product],
    catalog_cum: list[float],
) -> list[_Txn]:
    alias_set = set(aliases)
    people = [c for c in customers if c.patient_number not in alias_set]
    n_inactive = min(int(len(people) * spec.inactive_customer_rate), max(len(people) - 1, 0))
    inactive = set(rng.sample(range(len(people)), n_inactive))
    active = [c for i, c in enumerate(people) if i not in inactive]
    active += [c for c in customers if c.patient_number in alias_set]
    first_pass = active[:]
    rng.shuffle(first_pass)
    customer_cum = _cum([rng.lognormvariate(0.0, 0.9) for _ in active])
    day_cum = _cum([WEEKDAY_WEIGHTS[d.weekday()] for d in dates])
    day_range = range(len(dates))
    n_values, n_weights = zip(*LINES_PER_TXN, strict=True)
    n_cum = _cum(n_weights)
    order_values, order_weights = zip(*ORDER_TYPES, strict=True)
    order_cum = _cum(order_weights)
    hours, hour_weights = zip(*HOUR_WEIGHTS, strict=True)
    hour_list, hour_cum = list(hours), _cum(hour_weights)
    stores = spec.stores

    sales: list[_Txn] = []
    # refunds add lines too: aim the sales so that sales + refunds come out near lines_target
    lines_left = max(1, round(spec.lines_target / (1 + 0.8 * spec.refund_rate)))
    i = 0
    while lines_left > 0 and active:
        if i < len(first_pass):
            customer = first_pass[i]
        else:
            customer = rng.choices(active, cum_weights=customer_cum)[0]
        i += 1
        count = min(rng.choices(n_values, cum_weights=n_cum)[0], lines_left)
        lines_left -= count
        day = rng.choices(day_range, cum_weights=day_cum)[0]
        store = stores[customer.home]
        if len(stores) > 1 and rng.random() < 0.12:
            store = rng.choice([s for s in stores if s is not store])
        sales.append(
            _Txn(
                seq=len(sales),
                day=day,
                seconds=_random_seconds(rng, hour_list, hour_cum),
                customer=customer,
                store=store,
                order_type=rng.choices(order_values, cum_weights=order_cum)[0],
                lines=_make_lines(rng, catalog, catalog_cum, count),
            )
        )

    # the pop-up kiosk (unmapped location): a handful of sales on one weekend mid-window
    if sales and spec.unmapped_transactions > 0:
        mid = len(dates) // 2
        saturday = next((d for d in range(mid, len(dates)) if dates[d].weekday() == 5), mid)
        popup_days = [d for d in (saturday, saturday + 1) if d < len(dates)]
        candidates = [t for t in sales if t.day in popup_days] or sales
        chosen = rng.sample(candidates, min(spec.unmapped_transactions, len(candidates)))
        for t in chosen:
            t.store = spec.unmapped_store
            t.order_type = "In Store"
            t.seconds = rng.randint(11 * 3600, 18 * 3600)  # kiosk hours
    return sales


def _make_refunds(spec: DropSpec, rng: random.Random, sales: list[_Txn], n_days: int) -> list[_Txn]:
    last = n_days - 1
    candidates = [t for t in sales if t.day < last]
    if not candidates or spec.refund_rate <= 0:
        return []
    k = min(len(candidates), max(1, round(len(sales) * spec.refund_rate)))
    refunds: list[_Txn] = []
    for original in sorted(rng.sample(candidates, k), key=lambda t: t.seq):
        day = original.day + rng.randint(1, min(7, last - original.day))
        lines = original.lines
        if len(lines) > 1 and rng.random() < 0.4:
            keep = sorted(rng.sample(range(len(lines)), rng.randint(1, len(lines) - 1)))
            lines = [lines[j] for j in keep]
        refunds.append(
            _Txn(
                seq=len(sales) + len(refunds),
                day=day,
                seconds=rng.randint(10 * 3600, 20 * 3600),
                customer=original.customer,
                store=original.store,
                order_type=original.order_type,
                lines=list(lines),
                refund_of=original,
                negative=rng.random() < 0.55,
            )
        )
    if len(refunds) >= 2 and len({r.negative for r in refunds}) == 1:
        refunds[0].negative = not refunds[0].negative
    return refunds


def _make_bad(
    spec: DropSpec,
    rng: random.Random,
    formats: list[_FileFormat],
    customers: list[_Customer],
    catalog: list[_Product],
    catalog_cum: list[float],
    first_seq: int,
) -> list[_Txn]:
    n_days = len(formats)
    if spec.bad_lines <= 0 or n_days == 0 or not customers:
        return []
    n_files = max(1, min(spec.bad_files, n_days, spec.bad_lines))
    chosen = sorted(rng.sample(range(n_days), n_files))
    # make sure BOM and CRLF files carry bad rows too (line numbers must still be right there)
    for attr in ("bom", "crlf"):
        with_attr = [i for i in range(n_days) if getattr(formats[i], attr)]
        if with_attr and not any(getattr(formats[i], attr) for i in chosen):
            replace = 0 if attr == "bom" else len(chosen) - 1
            pick = rng.choice([i for i in with_attr if i not in chosen] or with_attr)
            if pick not in chosen:
                chosen[replace] = pick
    chosen.sort()
    reasons = [BAD_REASONS[i % len(BAD_REASONS)] for i in range(spec.bad_lines)]
    rng.shuffle(reasons)
    per_file = [
        spec.bad_lines // n_files + (1 if j < spec.bad_lines % n_files else 0)
        for j in range(n_files)
    ]
    bad: list[_Txn] = []
    stores = spec.stores
    pos = 0
    for day, count in zip(chosen, per_file, strict=True):
        for _ in range(count):
            reason = reasons[pos]
            pos += 1
            customer = rng.choice(customers)
            detail = ""
            if reason == BAD_DATE:
                detail = rng.choice(BAD_DATE_VALUES)
            elif reason == BAD_MONEY:
                detail = f"{rng.choice(MONEY_COLUMNS)}|{rng.choice(BAD_MONEY_VALUES)}"
            elif reason == EXTRA_COLUMNS_REASON:
                detail = "Patient Address" if rng.random() < 0.6 else "Patient Name"
            bad.append(
                _Txn(
                    seq=first_seq + len(bad),
                    day=day,
                    seconds=rng.randint(9 * 3600, 21 * 3600),
                    customer=customer,
                    store=stores[customer.home],
                    order_type="In Store",
                    lines=_make_lines(rng, catalog, catalog_cum, 1),
                    bad_reason=reason,
                    bad_detail=detail,
                )
            )
    return bad


def _render_rows(txn: _Txn, dates: list[date], fmt: _FileFormat) -> list[_Row]:
    d = dates[txn.day]
    sep = "-" if fmt.iso_dates else "/"
    c = txn.customer
    s = txn.seconds
    common = {
        "TransactionID": txn.tid,
        "TransactionRefundID": txn.refund_of.tid if txn.refund_of else "",
        "Patient Number": c.patient_number,
        "LocationID": txn.store.location_id,
        "Order Type": txn.order_type,
        "TransactionDate": f"{d.year:04d}{sep}{d.month:02d}{sep}{d.day:02d}",
        "Completed Time": f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}",
        "Patient Postal Code": c.postal_code,
        "Patient Address": c.address,
        "Patient Name": c.name,
        "Patient email": c.email,
        "Patient Phone Default": c.phone,
        "Patient Age": c.birth.strftime("%Y/%m/%d") if c.birth else "",
        "Facility Name": txn.store.facility_name,
    }
    sign = -1 if txn.negative else 1
    rows: list[_Row] = []
    for line in txn.lines:
        price = line.subtotal - line.discount
        values = dict(common)
        values["Item ID"] = line.product.item_id
        values["ProductName"] = line.product.name
        values["Product Category Name"] = line.product.category
        values["VendorName"] = line.product.vendor
        values["InventoryQuantity"] = str(sign * line.qty)
        values["Agg - Product Sales (subtotal)"] = _money(sign * line.subtotal)
        values["AllocatedTax"] = _money(sign * _tax(price, txn.store.tax_bp))
        values["Product Discount"] = _money(sign * line.discount)
        values["AllocatedPrice"] = _money(sign * price)
        row = _Row(values)
        if txn.bad_reason:
            row.bad_reason = txn.bad_reason
            if txn.bad_reason == BAD_DATE:
                values["TransactionDate"] = txn.bad_detail
            elif txn.bad_reason == BAD_MONEY:
                column, broken = txn.bad_detail.split("|", 1)
                values[column] = broken
            elif txn.bad_reason == MISSING_TRANSACTION_ID:
                values["TransactionID"] = ""
            elif txn.bad_reason == MISSING_PATIENT_NUMBER:
                values["Patient Number"] = ""
            elif txn.bad_reason == EXTRA_COLUMNS_REASON:
                row.split_field = txn.bad_detail
                if row.split_field == "Patient Name":
                    values["Patient Name"] = f"{c.last}, {c.first}"
                elif "," not in c.address:
                    values["Patient Address"] = f"{c.address or '100 Main St'}, Apt 2, Sacramento"
        rows.append(row)
    return rows


def _extra_value(column: str, values: dict[str, str]) -> str:
    tid = values.get("TransactionID", "")
    key = int(tid) if tid.isdigit() else 0
    if column == "Budtender Name":
        return BUDTENDERS[key % len(BUDTENDERS)]
    if column == "Register":
        return f"REG-{key % 4 + 1}"
    return str(key % 37)  # "Loyalty Points Earned"


def _write_file(path: Path, fmt: _FileFormat, rows: list[_Row]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if fmt.crlf else "\n")
    writer.writerow(fmt.header())
    for row in rows:
        cells = [
            row.values[col] if col in row.values else _extra_value(col, row.values)
            for col in fmt.columns
        ]
        if row.split_field:  # broken export: the cell's commas become separators
            at = fmt.columns.index(row.split_field)
            cells[at : at + 1] = cells[at].split(",")
        writer.writerow(cells)
    data = buffer.getvalue().encode("utf-8")
    if fmt.bom:
        data = b"\xef\xbb\xbf" + data
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _validate(spec: DropSpec) -> None:
    if spec.days < 1:
        raise ValueError("days must be >= 1")
    if spec.customers < 1:
        raise ValueError("customers must be >= 1")
    if spec.lines_target < 1:
        raise ValueError("lines_target must be >= 1")
    if not spec.stores:
        raise ValueError("at least one mapped store is required")
    ids = [s.location_id for s in spec.stores] + [spec.unmapped_store.location_id]
    if len(set(ids)) != len(ids):
        raise ValueError("store LocationIDs must be distinct")
    if spec.catalog_size < 6:
        raise ValueError("catalog_size must be >= 6")


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def generate(out_dir: Path, spec: DropSpec = DropSpec()) -> DropReport:
    """Write one ``sales_YYYY-MM-DD.csv`` per day into ``out_dir`` and return the ground truth.

    Files are rewritten every time (each atomically, via a temporary file and ``os.replace``);
    stale ``sales_YYYY-MM-DD.csv`` files from an earlier, different spec are removed so the
    directory holds exactly this spec's drop. Nothing else in ``out_dir`` is touched.
    """
    _validate(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dates = [spec.end_date - timedelta(days=spec.days - 1 - i) for i in range(spec.days)]
    names = [f"sales_{d.isoformat()}.csv" for d in dates]

    formats = _file_formats(spec, _rng(spec, "formats"))
    catalog, catalog_cum = _make_catalog(spec, _rng(spec, "catalog"))
    customers, aliases = _make_customers(spec, _rng(spec, "customers"))
    sales = _make_sales(spec, _rng(spec, "sales"), dates, customers, aliases, catalog, catalog_cum)
    refunds = _make_refunds(spec, _rng(spec, "refunds"), sales, len(dates))
    bad = _make_bad(
        spec,
        _rng(spec, "bad"),
        formats,
        customers,
        catalog,
        catalog_cum,
        len(sales) + len(refunds),
    )

    # TransactionIDs follow the clock (with small gaps for voided tickets)
    id_rng = _rng(spec, "ids")
    everything = sorted([*sales, *refunds, *bad], key=lambda t: (t.day, t.seconds, t.seq))
    next_id = 4_700_000 + id_rng.randrange(100_000)
    for txn in everything:
        txn.tid = str(next_id)
        next_id += 1 if id_rng.random() < 0.9 else id_rng.randint(2, 4)

    # rows per day, in time order; then re-sent rows at the top of the next file
    per_day: list[list[_Row]] = [[] for _ in dates]
    for txn in everything:
        per_day[txn.day].extend(_render_rows(txn, dates, formats[txn.day]))
    dup_rng = _rng(spec, "duplicates")
    resent: list[list[_Row]] = [[] for _ in dates]
    for d in range(len(dates) - 1):
        for row in per_day[d]:
            if not row.bad_reason and dup_rng.random() < spec.duplicate_rate:
                resent[d + 1].append(_Row(row.values, is_duplicate=True))
    if spec.duplicate_rate > 0 and len(dates) > 1 and not any(resent):
        goods = [r for r in per_day[0] if not r.bad_reason]
        if goods:
            resent[1].append(_Row(dup_rng.choice(goods).values, is_duplicate=True))

    # write
    bad_lines: list[tuple[str, int, str]] = []
    duplicate_by_file: dict[str, int] = {}
    rows_written = 0
    for d, name in enumerate(names):
        rows = resent[d] + per_day[d]
        for number, row in enumerate(rows, start=2):  # line 1 is the header
            if row.bad_reason:
                bad_lines.append((name, number, row.bad_reason))
        if resent[d]:
            duplicate_by_file[name] = len(resent[d])
        rows_written += len(rows)
        _write_file(out_dir / name, formats[d], rows)
    keep = set(names)
    for stale in sorted(out_dir.glob("sales_*.csv")):
        if FILE_NAME_RE.fullmatch(stale.name) and stale.name not in keep:
            stale.unlink()

    return _report(
        spec,
        out_dir,
        dates,
        names,
        formats,
        customers,
        aliases,
        sales,
        refunds,
        bad_lines,
        duplicate_by_file,
        rows_written,
    )


def _report(
    spec: DropSpec,
    out_dir: Path,
    dates: list[date],
    names: list[str],
    formats: list[_FileFormat],
    customers: list[_Customer],
    aliases: dict[str, str],
    sales: list[_Txn],
    refunds: list[_Txn],
    bad_lines: list[tuple[str, int, str]],
    duplicate_by_file: dict[str, int],
    rows_written: int,
) -> DropReport:
    by_customer_locations: dict[str, set[str]] = {}
    lines_per_location: dict[str, int] = {}
    txns_per_location: dict[str, int] = {}
    customers_per_location: dict[str, set[str]] = {}
    last_sale: dict[str, date] = {}
    sale_cents = 0
    refund_cents = 0
    for txn in [*sales, *refunds]:
        pn = txn.customer.patient_number
        loc = txn.store.location_id
        by_customer_locations.setdefault(pn, set()).add(loc)
        customers_per_location.setdefault(loc, set()).add(pn)
        lines_per_location[loc] = lines_per_location.get(loc, 0) + len(txn.lines)
        txns_per_location[loc] = txns_per_location.get(loc, 0) + 1
        cents = sum(line.subtotal - line.discount for line in txn.lines)
        if txn.refund_of is None:
            sale_cents += cents
            if pn not in last_sale or last_sale[pn] < dates[txn.day]:
                last_sale[pn] = dates[txn.day]
        else:
            refund_cents += cents
    with_sales = sorted(by_customer_locations)
    by_number = {c.patient_number: c for c in customers}
    all_stores = [*spec.stores, spec.unmapped_store]
    used_locations = [s.location_id for s in all_stores if s.location_id in lines_per_location]
    last_date = dates[-1]
    under_21 = sum(
        1
        for pn in with_sales
        if (b := by_number[pn].birth) is not None and _age_on(b, last_date) < 21
    )
    return DropReport(
        out_dir=str(out_dir),
        files=names,
        first_date=dates[0],
        last_date=last_date,
        rows_written=rows_written,
        good_lines=sum(len(t.lines) for t in sales) + sum(len(t.lines) for t in refunds),
        sale_lines=sum(len(t.lines) for t in sales),
        refund_lines=sum(len(t.lines) for t in refunds),
        transactions=len(sales) + len(refunds),
        refund_transactions=len(refunds),
        negative_quantity_refund_transactions=sum(1 for t in refunds if t.negative),
        refunded_transaction_ids=[t.refund_of.tid for t in refunds if t.refund_of is not None],
        customers_total=len(customers),
        customers_with_sales=len(with_sales),
        multi_store_customers=sum(1 for locs in by_customer_locations.values() if len(locs) > 1),
        under_21_customers_with_sales=under_21,
        duplicate_lines=sum(duplicate_by_file.values()),
        duplicate_lines_by_file=duplicate_by_file,
        bad_lines=bad_lines,
        mapped_location_ids=[s.location_id for s in spec.stores],
        unmapped_location_ids=(
            [spec.unmapped_store.location_id]
            if spec.unmapped_store.location_id in lines_per_location
            else []
        ),
        location_names={s.location_id: s.facility_name for s in all_stores},
        lines_per_location={loc: lines_per_location[loc] for loc in used_locations},
        transactions_per_location={loc: txns_per_location[loc] for loc in used_locations},
        customers_per_location={loc: len(customers_per_location[loc]) for loc in used_locations},
        sales_allocated_price_cents=sale_cents,
        refund_allocated_price_cents=refund_cents,
        last_sale_date_by_customer={pn: last_sale[pn] for pn in sorted(last_sale)},
        phone_kind_by_customer={pn: by_number[pn].phone_kind for pn in with_sales},
        email_kind_by_customer={pn: by_number[pn].email_kind for pn in with_sales},
        alias_patient_numbers=dict(sorted(aliases.items())),
        files_with_bom=[n for n, f in zip(names, formats, strict=True) if f.bom],
        files_with_crlf=[n for n, f in zip(names, formats, strict=True) if f.crlf],
        files_with_misspelled_headers=[
            n for n, f in zip(names, formats, strict=True) if f.misspelled
        ],
        files_with_iso_dates=[n for n, f in zip(names, formats, strict=True) if f.iso_dates],
        files_with_extra_columns=[
            n for n, f in zip(names, formats, strict=True) if f.extra_columns
        ],
        files_with_reordered_columns=[
            n for n, f in zip(names, formats, strict=True) if f.reordered
        ],
    )


def main(argv: list[str] | None = None) -> int:
    defaults = DropSpec()
    parser = argparse.ArgumentParser(
        prog="python -m examples.generate_drops",
        description="Write deterministic daily POS CSV drops (sales_YYYY-MM-DD.csv).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "drops",
        help="output directory (default: examples/drops)",
    )
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--customers", type=int, default=defaults.customers)
    parser.add_argument(
        "--lines",
        type=int,
        default=defaults.lines_target,
        help="approx good item lines over all days",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=defaults.end_date,
        help="last file's day, YYYY-MM-DD",
    )
    args = parser.parse_args(argv)
    spec = DropSpec(
        days=args.days,
        customers=args.customers,
        lines_target=args.lines,
        end_date=args.end_date,
        seed=args.seed,
    )
    started = time.perf_counter()
    try:
        report = generate(args.out, spec)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {report.summary()} in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

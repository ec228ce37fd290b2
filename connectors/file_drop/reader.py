"""Discover and parse POS flat-file drops (the flat-file contract in the reference README).

Parsing keeps every value as text: typing happens in the normaliser, where a bad value
quarantines one row with its reason. Parsing itself rejects only what cannot be read as a
row (wrong number of fields), and rejects a whole file only when it has no usable header
or is not UTF-8.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

# canonical raw column -> header spellings seen in the wild (compared case- and space-blind)
COLUMNS: dict[str, tuple[str, ...]] = {
    "transaction_id": ("TransactionID", "TransacitonID"),
    "refund_of": ("TransactionRefundID", "TransacitonRefundID"),
    "customer_id": ("Patient Number",),
    "location_id": ("LocationID", "LocaitonID"),
    "order_type": ("Order Type",),
    "item_id": ("Item ID",),
    "product_name": ("ProductName",),
    "category": ("Product Category Name",),
    "vendor": ("VendorName",),
    "quantity": ("InventoryQuantity",),
    "subtotal": ("Agg - Product Sales (subtotal)",),
    "tax": ("AllocatedTax",),
    "discount": ("Product Discount",),
    "allocated_price": ("AllocatedPrice",),
    "transaction_date": ("TransactionDate",),
    "completed_time": ("Completed Time",),
    "postal_code": ("Patient Postal Code",),
    "address": ("Patient Address",),
    "patient_name": ("Patient Name",),
    "email": ("Patient email",),
    "phone": ("Patient Phone Default",),
    "birth_date": ("Patient Age",),
    "facility_name": ("Facility Name",),
}
REQUIRED = ("transaction_id", "customer_id")
RAW_SCHEMA = pa.schema([("_line", pa.int64())] + [(c, pa.string()) for c in COLUMNS])

_FOLD = re.compile(r"[\s_]+")


def _fold(header: str) -> str:
    return _FOLD.sub(" ", header.strip().lstrip("\ufeff")).lower()


_ALIASES = {
    _fold(spelling): column for column, spellings in COLUMNS.items() for spelling in spellings
}


@dataclass(frozen=True)
class DropFile:
    name: str
    path: Path
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        """Name, size and modification time: what tells a changed file from a seen one."""
        return f"{self.name}:{self.size}:{self.mtime_ns}"


def discover(folder: Path, pattern: str = "*.csv") -> list[DropFile]:
    if not folder.is_dir():
        raise FileNotFoundError(f"drop folder {folder} does not exist")
    files = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and fnmatch.fnmatch(path.name, pattern):
            stat = path.stat()
            files.append(DropFile(path.name, path, stat.st_size, stat.st_mtime_ns))
    return files


@dataclass
class ParsedFile:
    table: pa.Table | None
    rejects: pa.Table
    error: str | None = None
    sha256: str = ""
    unknown_columns: list[str] = field(default_factory=list)


def _rejects(rows: list[tuple[int, str, str]]) -> pa.Table:
    lines, reasons, raws = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {"_line": pa.array(lines, pa.int64()), "reason": list(reasons), "raw": list(raws)},
        schema=pa.schema([("_line", pa.int64()), ("reason", pa.string()), ("raw", pa.string())]),
    )


def parse_drop_file(path: Path) -> ParsedFile:
    """Parse one drop file. Never raises for bad content: returns `error` for a file that
    cannot be read at all, and `rejects` (line, reason, raw text) for rows that cannot."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return ParsedFile(
            None,
            _rejects([]),
            f"not UTF-8 text (first bad byte at line {line}); re-export the file as UTF-8",
            sha,
        )
    if not text.strip():
        return ParsedFile(None, _rejects([]), "empty file (no header row)", sha)
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    header = next(reader)
    mapped: list[str | None] = [_ALIASES.get(_fold(h)) for h in header]
    unknown = [h for h, m in zip(header, mapped, strict=True) if m is None and h.strip()]
    missing = [c for c in REQUIRED if c not in mapped]
    if missing:
        names = ", ".join(COLUMNS[c][0] for c in missing)
        return ParsedFile(
            None,
            _rejects([]),
            f"no usable header: required column(s) {names} missing "
            f"(first line read: {', '.join(header)[:200]!r})",
            sha,
            unknown,
        )
    positions = [(i, column) for i, column in enumerate(mapped) if column is not None]
    width = len(header)
    columns: dict[str, list[str | None]] = {c: [] for c in COLUMNS}
    lines: list[int] = []
    rejects: list[tuple[int, str, str]] = []
    physical = 1  # the header's last line
    try:
        for row in reader:
            start = physical + 1
            physical = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                rejects.append(
                    (
                        start,
                        f"row has {len(row)} fields, header has {width} "
                        "(unquoted comma or broken quoting?)",
                        ",".join(row)[:2000],
                    )
                )
                continue
            lines.append(start)
            for i, column in positions:
                value = row[i].strip()
                columns[column].append(value or None)
            for column in COLUMNS:
                if len(columns[column]) < len(lines):
                    columns[column].append(None)
    except csv.Error as exc:
        rejects.append((physical + 1, f"unreadable CSV from here on: {exc}", ""))
    table = pa.table(
        {
            "_line": pa.array(lines, pa.int64()),
            **{c: pa.array(v, pa.string()) for c, v in columns.items()},
        },
        schema=RAW_SCHEMA,
    )
    return ParsedFile(table, _rejects(rejects), None, sha, unknown)

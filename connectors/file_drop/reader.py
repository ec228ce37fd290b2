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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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
    path: Path | None  # None for a remote file until it is fetched (see location.py)
    size: int
    mtime_ns: int
    # Remote (OneDrive) files: the item id (stable across renames) and the content tag
    # (changes when, and only when, the bytes change).
    item_id: str | None = None
    ctag: str | None = None

    @property
    def fingerprint(self) -> str:
        """What tells a changed file from a seen one: name, size and modification time for a
        local file; name, size, item id and content tag for a remote one (a re-listing of
        unchanged files, e.g. after a delta reset, gives the same fingerprints)."""
        if self.item_id is None:
            return f"{self.name}:{self.size}:{self.mtime_ns}"
        return f"{self.name}:{self.size}:{self.item_id}:{self.ctag}"


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


class UnreadableFile(Exception):
    """The file cannot be read as a drop file at all (its reason names why)."""


def rejects_table(rows: list[tuple[int, str, str]]) -> pa.Table:
    lines, reasons, raws = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {"_line": pa.array(lines, pa.int64()), "reason": list(reasons), "raw": list(raws)},
        schema=pa.schema([("_line", pa.int64()), ("reason", pa.string()), ("raw", pa.string())]),
    )


class _Hashing(io.RawIOBase):
    """Hashes bytes as they are read, so a file is read once."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.digest, self.bytes_read = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return n or 0


@dataclass
class DropStream:
    """One drop file read as Arrow batches of BATCH_ROWS lines; memory stays bounded by a
    batch whatever the file's size. `rejects` fills while `batches()` is consumed."""

    path: Path
    batch_rows: int = 50_000
    unknown_columns: list[str] = field(default_factory=list)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    sha256: str = ""

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Raises UnreadableFile (no header, empty, not UTF-8); yields nothing for a header
        with no rows."""
        with self.path.open("rb") as handle:
            hashing = _Hashing(handle)
            text = io.TextIOWrapper(
                io.BufferedReader(hashing), encoding="utf-8-sig", errors="strict", newline=""
            )
            reader = csv.reader(text, strict=False)
            try:
                yield from self._rows(reader)
            except UnicodeDecodeError:
                raise UnreadableFile(
                    f"not UTF-8 text (first bad byte at line {_first_bad_line(self.path)}); "
                    "re-export the file as UTF-8"
                ) from None
            except csv.Error as exc:
                self.rejects.append(
                    (reader.line_num + 1, f"unreadable CSV from here on: {exc}", "")
                )
            finally:
                self.sha256 = hashing.digest.hexdigest()

    def _rows(self, reader: Any) -> Iterator[pa.RecordBatch]:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise UnreadableFile("empty file (no header row)")
        mapped: list[str | None] = [_ALIASES.get(_fold(h)) for h in header]
        self.unknown_columns = [
            h for h, m in zip(header, mapped, strict=True) if m is None and h.strip()
        ]
        missing = [c for c in REQUIRED if c not in mapped]
        if missing:
            names = ", ".join(COLUMNS[c][0] for c in missing)
            raise UnreadableFile(
                f"no usable header: required column(s) {names} missing "
                f"(first line read: {', '.join(header)[:200]!r})"
            )
        positions = [(i, column) for i, column in enumerate(mapped) if column is not None]
        absent = [c for c in COLUMNS if c not in mapped]
        width = len(header)
        physical = reader.line_num  # the header's last line
        lines: list[int] = []
        cells: list[list[str]] = []
        for row in reader:
            start = physical + 1
            physical = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                self.rejects.append(
                    (
                        start,
                        f"row has {len(row)} fields, header has {width} "
                        "(unquoted comma or broken quoting?)",
                        ",".join(row)[:2000],
                    )
                )
                continue
            lines.append(start)
            cells.append(row)
            if len(cells) >= self.batch_rows:
                yield _to_batch(lines, cells, positions, absent)
                lines, cells = [], []
        if cells:
            yield _to_batch(lines, cells, positions, absent)


def _first_bad_line(path: Path) -> int:
    """The 1-based line of the first byte that is not UTF-8 (error path only)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _to_batch(
    lines: list[int], cells: list[list[str]], positions: list[tuple[int, str]], absent: list[str]
) -> pa.RecordBatch:
    arrays: dict[str, pa.Array] = {"_line": pa.array(lines, pa.int64())}
    for i, column in positions:
        arrays[column] = pa.array([(row[i].strip() or None) for row in cells], pa.string())
    for column in absent:
        arrays[column] = pa.nulls(len(cells), pa.string())
    return pa.RecordBatch.from_pydict(arrays, schema=RAW_SCHEMA)


def parse_drop_file(path: Path) -> ParsedFile:
    """Parse a whole drop file into one table (small files, tests). Never raises for bad
    content: `error` for a file that cannot be read at all, `rejects` for rows."""
    stream = DropStream(path)
    try:
        batches = list(stream.batches())
    except UnreadableFile as exc:
        return ParsedFile(None, rejects_table([]), str(exc), stream.sha256, stream.unknown_columns)
    table = pa.Table.from_batches(batches, schema=RAW_SCHEMA)
    return ParsedFile(
        table, rejects_table(stream.rejects), None, stream.sha256, stream.unknown_columns
    )

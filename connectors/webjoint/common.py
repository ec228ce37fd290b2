"""Helpers every Webjoint normaliser uses: reading a landed partition, versions, quarantine.

`_version` of a Webjoint row is `<record's own update time, UTC, microseconds>|<hash of the
record>`: the newest change wins, and the value depends only on the record itself. Pulling
the same window again therefore writes the very same rows, so the warehouse does not change
however often a window is re-pulled (or in which order partitions load).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from aiq_sync.canonical import QUARANTINE_SCHEMA
from aiq_sync.landing import Manifest

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime(STAMP) if moment else "0000-00-00T00:00:00.000000Z"


def digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Landed:
    """One landed record: its id, update time, payload text (hashed) and parsed payload."""

    id: str
    modified_at: datetime | None
    text: str

    @property
    def payload(self) -> Any:
        return json.loads(self.text)

    def version(self, moment: datetime | None = None) -> str:
        return f"{stamp(moment or self.modified_at)}|{digest(self.text)}"


def newest_by_id(raw: pa.Table) -> Iterator[Landed]:
    """The partition's records, one per id (the newest; ties: the greater hash), in id order.
    Records without an id are all kept (the normaliser quarantines them)."""
    ids = raw.column("id").to_pylist()
    times = raw.column("modified_at").to_pylist()
    texts = raw.column("payload").to_pylist()
    best: dict[str, Landed] = {}
    anonymous: list[Landed] = []
    for rid, moment, text in zip(ids, times, texts, strict=True):
        record = Landed(rid or "", moment, text)
        if not rid:
            anonymous.append(record)
            continue
        held = best.get(rid)
        if held is None or _rank(record) > _rank(held):
            best[rid] = record
    yield from anonymous
    for rid in sorted(best):
        yield best[rid]


def _rank(record: Landed) -> tuple[str, str]:
    return stamp(record.modified_at), digest(record.text)


class Quarantine:
    """Collects rejected records of one partition with their reasons."""

    def __init__(self, manifest: Manifest) -> None:
        self.partition_key = manifest.partition_key
        self.file = f"{manifest.source}/{manifest.entity}"
        self.rows: list[tuple[str | None, str, str]] = []

    def add(self, record_id: str | None, reason: str, raw: str) -> None:
        self.rows.append((record_id or None, reason, raw))

    def table(self) -> pa.Table:
        n = len(self.rows)
        return pa.table(
            {
                "partition_key": [self.partition_key] * n,
                "file": [self.file] * n,
                "line": pa.array([None] * n, pa.int64()),
                "record_id": [r[0] for r in self.rows],
                "reason": [r[1] for r in self.rows],
                "raw": [r[2] for r in self.rows],
            },
            schema=QUARANTINE_SCHEMA,
        )


DEC = pa.decimal128(18, 4)
TS = pa.timestamp("us", tz="UTC")
_S = pa.string()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


# The columns each normaliser fills (a subset of the warehouse tables; see migrations.py).
SALES = _schema(
    ("sale_key", _S), ("source", _S), ("src_sale_id", _S), ("persona_key", _S),
    ("store_id", _S), ("location_key", _S), ("location_name", _S), ("sold_at", TS),
    ("sold_local_date", pa.date32()), ("status", _S), ("is_refund", pa.bool_()),
    ("refunded_sale_id", _S), ("order_type", _S), ("subtotal", DEC), ("discount", DEC),
    ("tax", DEC), ("total", DEC), ("currency", _S), ("item_count", pa.int32()),
    ("_version", _S),
)  # fmt: skip
SALE_ITEMS = _schema(
    ("sale_key", _S), ("line_id", _S), ("line_no", pa.int32()), ("source", _S), ("sku", _S),
    ("product_id", _S), ("name", _S), ("brand", _S), ("category", _S), ("quantity", DEC),
    ("unit_price", DEC), ("subtotal", DEC), ("discount", DEC), ("tax", DEC), ("total", DEC),
    ("_version", _S),
)  # fmt: skip
PERSONAS = _schema(
    ("persona_key", _S), ("source", _S), ("source_type", _S), ("src_id", _S),
    ("first_name", _S), ("last_name", _S), ("email", _S), ("phone", _S),
    ("birth_date", pa.date32()), ("postal_code", _S), ("address", _S), ("created_at", TS),
    ("updated_at", TS), ("_version", _S),
)  # fmt: skip
# Personas named by orders carry only who they are (the customers entity says the rest).
ORDER_PERSONAS = _schema(
    ("persona_key", _S), ("source", _S), ("source_type", _S), ("src_id", _S),
    ("first_name", _S), ("last_name", _S), ("email", _S), ("phone", _S), ("_version", _S),
)  # fmt: skip
PRODUCTS = _schema(
    ("source", _S), ("product_id", _S), ("sku", _S), ("name", _S), ("brand", _S),
    ("category", _S), ("price", DEC), ("image_url", _S), ("updated_at", TS), ("_version", _S),
)  # fmt: skip
INVENTORY = _schema(
    ("source", _S), ("store_id", _S), ("location_key", _S), ("location_name", _S), ("sku", _S),
    ("product_id", _S), ("quantity", DEC), ("unit_cost", DEC), ("unit_price", DEC),
    ("margin", DEC), ("snapshot_at", TS), ("_version", _S),
)  # fmt: skip


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table | None:
    if not rows:
        return None
    return pa.Table.from_pylist([{k: row.get(k) for k in schema.names} for row in rows], schema)


def snapshot_time(manifest: Manifest) -> datetime:
    """When a snapshot partition was taken: its extraction start (the manifest version)."""
    try:
        moment = datetime.fromisoformat(manifest.version)
    except ValueError:
        moment = manifest.extracted_at
    return moment.astimezone(UTC)

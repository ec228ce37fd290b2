"""Canonical batches: what every connector's normaliser hands to the loader.

A connector turns one landed partition (raw records) into a `CanonicalBatch` of Arrow
tables whose columns are a subset of the warehouse tables' (see migrations.py); the
loader merges them by the natural keys below. Bad records come back in `quarantine`
with their reason instead of raising, so one bad row never blocks the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from aiq_sync.landing import Manifest

# warehouse table -> natural key
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "core.personas": ("persona_key",),
    "core.sales": ("sale_key",),
    "core.sale_items": ("sale_key", "line_id"),
    "core.products": ("source", "product_id"),
    "core.inventory": ("source", "location_key", "product_id"),
}

# Persona fields a newer record may leave blank without erasing what an older one said
# (POS lines often omit the e-mail a previous visit captured).
PERSONA_STICKY = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "postal_code",
    "address",
    "created_at",
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("partition_key", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("record_id", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)


def persona_key(source: str, src_id: str) -> str:
    return f"{source}:{src_id}"


def sale_key(source: str, src_sale_id: str) -> str:
    return f"{source}:{src_sale_id}"


class PersonaFold:
    """Per persona, the newest non-blank value of each field: the row with the greatest
    `_version` wins, and older rows fill the fields it leaves blank (a later visit may omit
    the phone an earlier one gave). Each field remembers the version it came from, so the
    result does not depend on the order rows are added in."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, dict[str, str]] = {}  # persona -> field -> its version

    def add(self, row: dict[str, Any]) -> None:
        key, version = row["persona_key"], row["_version"]
        merged = self.rows.get(key)
        if merged is None:
            self.rows[key] = dict(row)
            self._versions[key] = {name: version for name, v in row.items() if v is not None}
            return
        versions = self._versions[key]
        for name, value in row.items():
            if value is not None and version >= versions.get(name, ""):
                merged[name] = value
                versions[name] = version
            else:
                merged.setdefault(name, None)


@dataclass
class CanonicalBatch:
    tables: dict[str, pa.Table] = field(default_factory=dict)
    quarantine: pa.Table = field(default_factory=QUARANTINE_SCHEMA.empty_table)
    # Sales whose totals are the sum of their items (recomputed after the merge).
    item_derived_sales: list[str] = field(default_factory=list)
    rows_in: int = 0
    # Field-level fixes that did not reject the row (e.g. invalid phone -> NULL), by kind.
    notes: dict[str, int] = field(default_factory=dict)
    # table -> version: this batch holds the source's complete snapshot of `table` (e.g.
    # inventory); after the merge, the source's rows with an older `_version` are deleted.
    snapshots: dict[str, str] = field(default_factory=dict)
    # key -> value for ops.sync_state under (source, normaliser entity), e.g. a store's time zone.
    state: dict[str, str] = field(default_factory=dict)

    def rows(self, table: str) -> int:
        t = self.tables.get(table)
        return 0 if t is None else t.num_rows


@dataclass(frozen=True)
class NormaliseContext:
    source: str
    source_type: str
    timezone: str
    store_map: dict[str, str]  # location key -> store id


class Normaliser(Protocol):
    """Implemented by each connector: landed raw records -> canonical rows."""

    entity: str

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch: ...

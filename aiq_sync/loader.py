"""Load landed partitions into the canonical tables.

The loader picks every landed partition whose manifest differs from the one loaded last
(`ops.loaded_partitions`), normalises it with the source's connector, and merges the
result by natural key. Partitions are loaded in chunks, each chunk one transaction, so
memory is bounded by a chunk and a crash leaves the previous good state. Loading is an
upsert: a re-landed partition updates the rows it still has and replaces its quarantine,
but rows it no longer has stay (deleting upstream data never deletes warehouse data).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from aiq_sync import warehouse
from aiq_sync.canonical import (
    NATURAL_KEYS,
    PERSONA_STICKY,
    QUARANTINE_SCHEMA,
    CanonicalBatch,
    NormaliseContext,
    Normaliser,
)
from aiq_sync.heap import release_free_heap
from aiq_sync.landing import Landing, Manifest
from aiq_sync.warehouse import Connection

log = logging.getLogger("aiq_sync.loader")

# Merge order matters only for readability of the log; every table merges independently.
TABLE_ORDER = ("core.personas", "core.sales", "core.sale_items", "core.products", "core.inventory")
# Rows per transaction (several partitions). DuckDB holds what a transaction writes, and the
# temp tables its merges drop, until commit: within 250k-row transactions RSS grew ~50 MB per
# merge even under a 128 MB memory_limit; one merge per transaction keeps it flat
# (bench: python -m aiq_sync.bench.sql_memory; 25k-row chunks measured no lower).
CHUNK_ROWS = 50_000
SLICE_ROWS = 50_000  # landed rows normalised at once, and waiting before a merge
# ...and at most about this much landed data per normalised slice: an API record (a bench
# order with its line items, ~8 KB of JSON) grows ~10x as Python objects while it is
# normalised, so 10k orders modified in one day (the 1M-order bench's nightly) took ~190 MB
# at once. 8 MB slices of the 1M-order history (~11 MB a day) peaked ~40 MB higher than
# 4 MB; 2 MB cost 6 % more CPU at 200k orders (two slices a day) for no lower peak.
SLICE_BYTES = 4 * 2**20
# Waiting slices merge at SLICE_ROWS landed rows or this many canonical rows, whichever
# comes first: one landed record can make many rows (an inventory item one per location,
# an order a sale and its items), and at 1M orders the nightly's 274k-row inventory merge
# needed ~100 MB of DuckDB's 128 MB default and sometimes ran out.
MERGE_ROWS = 150_000


@dataclass
class LoadReport:
    source: str
    partitions_loaded: int = 0
    partitions_skipped: int = 0
    rows_in: int = 0
    quarantined: int = 0
    unreadable: list[str] = field(default_factory=list)
    merged: Counter[str] = field(default_factory=Counter)
    inserted: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    unmapped_locations: int = 0

    def as_metadata(self) -> dict[str, object]:
        return {
            "partitions_loaded": self.partitions_loaded,
            "partitions_unchanged": self.partitions_skipped,
            "rows_in": self.rows_in,
            "rows_quarantined": self.quarantined,
            "unreadable_files": list(self.unreadable),
            "rows_merged": dict(self.merged),
            "rows_new": dict(self.inserted),
            "field_fixes": dict(self.notes),
            "unmapped_locations": self.unmapped_locations,
        }


def _chunks(manifests: list[Manifest], limit: int) -> list[list[Manifest]]:
    """Group partitions so one transaction holds about `limit` rows (at least one partition)."""
    chunks: list[list[Manifest]] = []
    current: list[Manifest] = []
    size = 0
    for manifest in manifests:
        if current and size + manifest.rows > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(manifest)
        size += manifest.rows
    if current:
        chunks.append(current)
    return chunks


def _rows_read(manifest: Manifest) -> int:
    # An unreadable file counts as one rejected record: the file itself.
    return manifest.rows + manifest.rejected or int(manifest.status == "unreadable")


def _unreadable_quarantine(manifest: Manifest) -> pa.Table:
    return pa.table(
        {
            "partition_key": [manifest.partition_key],
            "file": [manifest.origin.get("file")],
            "line": pa.array([None], pa.int64()),
            "record_id": [None],
            "reason": [f"whole file rejected: {manifest.error}"],
            "raw": [None],
        },
        schema=QUARANTINE_SCHEMA,
    )


def _parse_rejects(landing: Landing, manifest: Manifest) -> pa.Table:
    rejects = landing.read_rejects(manifest)
    n = rejects.num_rows
    return pa.table(
        {
            "partition_key": [manifest.partition_key] * n,
            "file": [manifest.origin.get("file")] * n,
            "line": rejects["_line"],
            "record_id": pa.array([None] * n, pa.string()),
            "reason": rejects["reason"],
            "raw": rejects["raw"],
        },
        schema=QUARANTINE_SCHEMA,
    )


def load_source(
    con: Connection,
    landing: Landing,
    normaliser: Normaliser,
    context: NormaliseContext,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> LoadReport:
    """Load this source's new or re-landed partitions of `normaliser.entity`."""
    source, entity = context.source, normaliser.entity
    report = LoadReport(source)
    loaded = {} if force else warehouse.loaded_manifests(con, source, entity)
    pending = []
    for manifest in landing.manifests(source, entity):
        if loaded.get(manifest.partition_key) == manifest.manifest_id:
            report.partitions_skipped += 1
        else:
            pending.append(manifest)
    # Oldest version first keeps the log readable; correctness does not depend on order.
    pending.sort(key=lambda m: m.version)
    for chunk in _chunks(pending, chunk_rows):
        _load_chunk(con, landing, normaliser, context, chunk, report)
        message = (
            f"{source}/{entity}: loaded {report.partitions_loaded}/{len(pending)} partitions, "
            f"{report.rows_in} rows, {report.quarantined} quarantined"
        )
        log.info(message)
        if progress:
            progress(message)
    with warehouse.transaction(con):
        warehouse.remap_store_ids(con, source, context.store_map)
        report.unmapped_locations = warehouse.refresh_unmapped_locations(con, source)
    return report


def _merge_batches(con: Connection, batches: list[CanonicalBatch], report: LoadReport) -> None:
    """Merge several normalised slices at once: one merge per table however many small
    partitions (a year of daily API partitions) the slices came from."""
    for table in TABLE_ORDER:
        parts = [b.tables[table] for b in batches if b.rows(table)]
        if not parts:
            continue
        rows = pa.concat_tables(parts, promote_options="permissive")
        result = warehouse.merge(
            con,
            table,
            rows,
            NATURAL_KEYS[table],
            keep_existing_when_null=PERSONA_STICKY if table == "core.personas" else (),
        )
        report.merged[table] += result.staged
        report.inserted[table] += result.inserted


def _load_chunk(
    con: Connection,
    landing: Landing,
    normaliser: Normaliser,
    context: NormaliseContext,
    chunk: list[Manifest],
    report: LoadReport,
) -> None:
    """One transaction: partitions are read in slices, normalised, and merged every
    ~SLICE_ROWS landed or MERGE_ROWS canonical rows, so memory is bounded by a slice, not
    by a partition or the chunk, and many small partitions still cost few merges."""
    quarantine: list[pa.Table] = []
    derived: list[str] = []
    snapshots: dict[str, str] = {}
    # Normalised slices wait here until SLICE_ROWS landed or MERGE_ROWS canonical rows are
    # ready, then merge at once.
    pending: list[CanonicalBatch] = []
    pending_rows = pending_canonical = 0
    with warehouse.transaction(con):
        for manifest in chunk:
            quarantine.append(_parse_rejects(landing, manifest))
            if manifest.status == "unreadable":
                label = manifest.origin.get("file") or manifest.partition_key
                log.warning("%s: %s rejected whole: %s", context.source, label, manifest.error)
                report.unreadable.append(f"{label}: {manifest.error}")
                quarantine.append(_unreadable_quarantine(manifest))
                continue
            for raw in landing.read_slices(manifest, SLICE_ROWS, SLICE_BYTES):
                batch = normaliser.normalise(raw, manifest, context)
                # The slice's transient objects are freed now; without this glibc keeps
                # their pages and RSS climbs with every partition until the merge.
                release_free_heap()
                pending.append(batch)
                pending_rows += raw.num_rows
                pending_canonical += sum(t.num_rows for t in batch.tables.values())
                if pending_rows >= SLICE_ROWS or pending_canonical >= MERGE_ROWS:
                    _merge_batches(con, pending, report)
                    pending, pending_rows, pending_canonical = [], 0, 0
                quarantine.append(batch.quarantine)
                derived.extend(batch.item_derived_sales)
                report.notes.update(batch.notes)
                for table, version in batch.snapshots.items():
                    snapshots[table] = max(version, snapshots.get(table, version))
                for key, value in batch.state.items():
                    warehouse.set_state(con, context.source, normaliser.entity, key, value)
        _merge_batches(con, pending, report)
        warehouse.refresh_sale_totals(con, derived)
        for table, version in snapshots.items():
            warehouse.prune_snapshot(con, table, context.source, version)
        rejected = pa.concat_tables(quarantine)
        warehouse.replace_quarantine(
            con, context.source, normaliser.entity, [m.partition_key for m in chunk], rejected
        )
        per_partition = Counter(rejected["partition_key"].to_pylist())
        loaded = [
            warehouse.LoadedPartition(
                m.partition_key,
                m.manifest_id,
                _rows_read(m),
                per_partition.get(m.partition_key, 0),
            )
            for m in chunk
        ]
        warehouse.record_loaded(con, context.source, normaliser.entity, loaded)
    report.partitions_loaded += len(chunk)
    report.rows_in += sum(_rows_read(m) for m in chunk)
    report.quarantined += rejected.num_rows

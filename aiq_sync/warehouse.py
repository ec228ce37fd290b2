"""The DuckDB warehouse: migrations, newest-wins merges by natural key, bookkeeping.

Every function takes an open DuckDB connection so the same code runs under Dagster's
`WarehouseResource`, the CLI and tests. Callers own transactions (`transaction()`), so one
load step is one atomic unit: a crash leaves the previous good state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from aiq_sync.config import DuckDBSettings
from aiq_sync.migrations import MIGRATIONS
from aiq_sync.writer_lock import retry_locked

log = logging.getLogger("aiq_sync.warehouse")

Connection = duckdb.DuckDBPyConnection


def connect(
    path: str | Path, *, read_only: bool = False, settings: DuckDBSettings | None = None
) -> Connection:
    """Open the warehouse with `settings` (see `prepare`); while another process has the file
    open (DuckDB allows one writer and then no other opener), wait for it instead of failing
    at once."""
    if str(path) == ":memory:":
        con = duckdb.connect(":memory:")
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        con = retry_locked(
            lambda: duckdb.connect(str(path), read_only=read_only), f"warehouse {path}"
        )
    prepare(con, settings)
    return con


def prepare(con: Connection, settings: DuckDBSettings | None = None) -> None:
    """Session settings every warehouse connection needs, and its resource limits (the
    config's `duckdb` section; its defaults when not given): without a memory limit DuckDB
    keeps up to 80 % of RAM as cache, and a load spills to disk above the limit instead."""
    settings = settings or DuckDBSettings()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{settings.memory_limit}'")  # validated: a size
    if settings.threads:
        con.execute(f"SET threads = {int(settings.threads)}")
    if settings.temp_directory:
        con.execute("SET temp_directory = ?", [settings.temp_directory])


class WarehouseOutOfMemory(RuntimeError):
    """DuckDB ran out of `duckdb.memory_limit`; the message says what held the memory."""


def out_of_memory(con: Connection, exc: duckdb.OutOfMemoryException) -> WarehouseOutOfMemory:
    """`exc` with what DuckDB still holds once the failed statement has let go of its own
    memory (`duckdb_memory()`, by tag: tables, caches, the open transaction's writes), and
    the config field to raise: the bare DuckDB message names neither."""
    unread = "nothing"
    try:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()
        held = con.execute(
            "SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory() "
            "WHERE memory_usage_bytes > 0 OR temporary_storage_bytes > 0 "
            "ORDER BY memory_usage_bytes DESC"
        ).fetchall()
    except duckdb.Error as failed:  # too full even for this query, or the connection broke
        limit, held = None, []
        unread = f"unknown (duckdb_memory() failed too: {str(failed).splitlines()[0]})"
    mib = 2**20
    parts = ", ".join(
        f"{tag} {used / mib:.1f} MiB" + (f" (+{spilled / mib:.1f} MiB spilled)" if spilled else "")
        for tag, used, spilled in held
    )
    first_line = str(exc).splitlines()[0]
    return WarehouseOutOfMemory(
        f"DuckDB ran out of its memory limit ({limit[0] if limit else 'unknown'}): "
        f"{first_line}. Still held after the failed statement: {parts or unread}. "
        "Raise `duckdb.memory_limit` in the config, or lower `duckdb.threads` "
        "(docs/warehouse.md#memory)."
    )


@contextmanager
def open_warehouse(
    path: str | Path, *, read_only: bool = False, settings: DuckDBSettings | None = None
) -> Iterator[Connection]:
    con = connect(path, read_only=read_only, settings=settings)
    try:
        if not read_only:
            migrate(con)
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: Connection) -> Iterator[Connection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def migrate(con: Connection) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied."""
    con.execute("SET TimeZone = 'UTC'")  # not prepare(): keep the caller's memory settings
    con.execute(
        "CREATE TABLE IF NOT EXISTS main.schema_migrations "
        "(version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM main.schema_migrations").fetchall()}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        with transaction(con):
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO main.schema_migrations VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC)],
            )
        log.info("warehouse migration %s applied: %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def table_columns(con: Connection, table: str) -> list[str]:
    schema, name = table.split(".")
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    if not rows:
        raise KeyError(f"no table {table}")
    return [r[0] for r in rows]


@dataclass(frozen=True)
class MergeResult:
    table: str
    staged: int
    inserted: int
    updated: int


_stage_counter = 0


def _stage_name(table: str) -> str:
    global _stage_counter
    _stage_counter += 1
    return f"stage_{table.replace('.', '_')}_{_stage_counter}"


def merge(
    con: Connection,
    table: str,
    rows: pa.Table,
    keys: Sequence[str],
    *,
    keep_existing_when_null: Sequence[str] = (),
) -> MergeResult:
    """Upsert `rows` into `table` by `keys`; the row with the greatest `_version` wins.

    Within the batch, duplicates of a key collapse to the newest version first, so re-sent
    rows count once. Against the table, an incoming row replaces the stored one only when its
    version is at least as new, whatever order partitions are loaded in (back-fills stay
    deterministic). Columns in `keep_existing_when_null` keep their stored value when the
    newer row has none (a POS line with a blank email does not erase a known email).
    Columns missing from `rows` are NULL on insert and keep their stored value on update;
    values are cast to the table's types.
    """
    if rows.num_rows == 0:
        return MergeResult(table, 0, 0, 0)
    columns = table_columns(con, table)
    extra = set(rows.column_names) - set(columns)
    if extra:
        raise ValueError(f"{table}: unknown column(s) {sorted(extra)}")
    arrow_name = _stage_name(table) + "_arrow"
    stage = arrow_name.removesuffix("_arrow")
    # One chunk: a batch gathered from a year of day partitions has ~700 small chunks, and
    # DuckDB gives each its own full-size vectors when it materialises the batch (~100 MB
    # more for 12.5k customers in 732 chunks; the contiguous copy costs what the rows take).
    con.register(arrow_name, rows.combine_chunks())
    try:
        present = set(rows.column_names)
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
                table.split("."),
            ).fetchall()
        )
        select = ", ".join(
            f"CAST({_q(c)} AS {types[c]}) AS {_q(c)}"
            if c in present
            else f"NULL::{types[c]} AS {_q(c)}"
            for c in columns
        )
        key_list = ", ".join(_q(k) for k in keys)
        if keep_existing_when_null:
            # Per column: the newest value, but for sticky columns the newest non-NULL one
            # (arg_max skips NULLs, arg_max_null does not), so one blank line in a later file
            # does not erase what an earlier file of the same batch said.
            picks = ", ".join(
                _q(c)
                if c in keys
                else "max(_version) AS _version"
                if c == "_version"
                else f"{'arg_max' if c in keep_existing_when_null else 'arg_max_null'}"
                f"({_q(c)}, _version) AS {_q(c)}"
                for c in columns
            )
            collapse = f"SELECT {picks} FROM repeated_rows GROUP BY {key_list}"
        else:
            collapse = (
                "SELECT * FROM repeated_rows QUALIFY row_number() "
                f"OVER (PARTITION BY {key_list} ORDER BY _version DESC) = 1"
            )
        # Only keys sent more than once in the batch go through the collapse: they are few (a
        # persona in two partitions of one batch), and collapsing every row cost >64 MB of
        # DuckDB memory for 20k personas on two threads (per-column aggregate states).
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {stage} AS "
            f"WITH incoming AS (SELECT {select} FROM {arrow_name}), "
            f"repeated AS (SELECT {key_list} FROM incoming GROUP BY {key_list} "
            "HAVING count(*) > 1), "
            f"repeated_rows AS (SELECT * FROM incoming SEMI JOIN repeated USING ({key_list})) "
            f"SELECT * FROM incoming ANTI JOIN repeated USING ({key_list}) "
            f"UNION ALL BY NAME {collapse}"
        )
        staged = con.execute(f"SELECT count(*) FROM {stage}").fetchone()[0]
        # Plain equality (keys are NOT NULL): IS NOT DISTINCT FROM defeats DuckDB's hash join.
        on = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in keys)
        # The final rows. A key's newest version wins (the incoming row when its version is
        # at least the stored one), except that sticky columns take the newest NON-NULL
        # value whichever row is newer: an older purchase loaded after a newer one still
        # fills a blank e-mail, so back-fills in any order end in the same row. Columns the
        # batch does not carry (e.g. contact_id, set by the identity step) keep their value.
        newer = f"(t.{_q(keys[0])} IS NULL OR s._version >= t._version)"

        def pick(c: str) -> str:
            if c in keys:
                return f"s.{_q(c)}"
            if c not in present:
                return f"t.{_q(c)}"
            if c in keep_existing_when_null:
                return (
                    f"CASE WHEN {newer} THEN coalesce(s.{_q(c)}, t.{_q(c)}) "
                    f"ELSE coalesce(t.{_q(c)}, s.{_q(c)}) END"
                )
            return f"CASE WHEN {newer} THEN s.{_q(c)} ELSE t.{_q(c)} END"

        fills = " OR ".join(
            f"(t.{_q(c)} IS NULL AND s.{_q(c)} IS NOT NULL)"
            for c in keep_existing_when_null
            if c in present
        )
        first_key = _q(keys[0])
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {stage}_final AS SELECT "
            + ", ".join(f"{pick(c)} AS {_q(c)}" for c in columns)
            + f", t.{first_key} IS NOT NULL AS _existed "
            f"FROM {stage} s LEFT JOIN {table} t ON {on} "
            f"WHERE {newer}" + (f" OR {fills}" if fills else "")
        )
        inserted, updated = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT _existed), count(*) FILTER (WHERE _existed) "
            f"FROM {stage}_final"
        ).fetchone()
        # Delete-then-insert instead of MERGE/UPDATE: DuckDB rewrites many updated rows far
        # more slowly than it deletes and appends them (40 s vs under 1 s on 200k sales).
        con.execute(f"DELETE FROM {table} t USING {stage}_final s WHERE {on} AND s._existed")
        con.execute(
            f"INSERT INTO {table} ({', '.join(_q(c) for c in columns)}) "
            f"SELECT {', '.join(_q(c) for c in columns)} FROM {stage}_final"
        )
        con.execute(f"DROP TABLE {stage}_final")
        con.execute(f"DROP TABLE {stage}")
    finally:
        # After a failed statement the transaction is aborted and refuses even this: let the
        # statement's own error (e.g. out of memory) be the one raised.
        with suppress(duckdb.Error):
            con.unregister(arrow_name)
    return MergeResult(table, staged, inserted, updated)


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def prune_snapshot(con: Connection, table: str, source: str, version: str) -> int:
    """Keep only the newest snapshot of a source in `table`: rows of older ones are deleted."""
    return con.execute(
        f"DELETE FROM {table} WHERE source = ? AND _version < ?", [source, version]
    ).fetchone()[0]


def replace_quarantine(
    con: Connection, source: str, entity: str, partition_keys: Sequence[str], rows: pa.Table
) -> int:
    """A partition's quarantine is what its latest load rejected: replace, never append."""
    if partition_keys:
        con.execute(
            "DELETE FROM ops.quarantine WHERE source = ? AND entity = ? "
            "AND list_contains(?, partition_key)",
            [source, entity, list(partition_keys)],
        )
    if rows.num_rows == 0:
        return 0
    con.register("quarantine_arrow", rows)
    try:
        con.execute(
            "INSERT INTO ops.quarantine (source, entity, partition_key, file, line, record_id, "
            "reason, raw, quarantined_at) SELECT ?, ?, partition_key, file, line, record_id, "
            "reason, raw, ? FROM quarantine_arrow",
            [source, entity, datetime.now(UTC)],
        )
    finally:
        con.unregister("quarantine_arrow")
    return rows.num_rows


def loaded_manifests(con: Connection, source: str, entity: str) -> dict[str, str]:
    """partition key -> manifest id of what is loaded now."""
    return dict(
        con.execute(
            "SELECT partition_key, manifest_id FROM ops.loaded_partitions "
            "WHERE source = ? AND entity = ?",
            [source, entity],
        ).fetchall()
    )


@dataclass(frozen=True)
class LoadedPartition:
    partition_key: str
    manifest_id: str
    rows_in: int
    rows_quarantined: int


def record_loaded(
    con: Connection, source: str, entity: str, partitions: Sequence[LoadedPartition]
) -> None:
    """Note what is loaded now, one statement for a whole chunk: one pair per partition
    cost ~1.2 ms, ~4 s for the ~3,700 day partitions of a 730-day back-fill."""
    if not partitions:
        return
    rows = pa.table(
        {
            "source": [source] * len(partitions),
            "entity": [entity] * len(partitions),
            "partition_key": [p.partition_key for p in partitions],
            "manifest_id": [p.manifest_id for p in partitions],
            "rows_in": pa.array([p.rows_in for p in partitions], pa.int64()),
            "rows_quarantined": pa.array([p.rows_quarantined for p in partitions], pa.int64()),
        }
    )
    con.register("_loaded_now", rows)
    try:
        con.execute(
            "DELETE FROM ops.loaded_partitions AS l USING _loaded_now AS n "
            "WHERE l.source = n.source AND l.entity = n.entity "
            "AND l.partition_key = n.partition_key"
        )
        con.execute(
            "INSERT INTO ops.loaded_partitions SELECT source, entity, partition_key, "
            "manifest_id, rows_in, rows_quarantined, ? FROM _loaded_now",
            [datetime.now(UTC)],
        )
    finally:
        con.unregister("_loaded_now")


def refresh_sale_totals(con: Connection, sale_keys: Sequence[str]) -> None:
    """Recompute item-derived sale totals from core.sale_items.

    For sources whose sales arrive as item lines (flat files, SQL), a transaction's lines may
    arrive in several files; the header always reflects every line loaded so far.
    """
    if not sale_keys:
        return
    con.register("touched_arrow", pa.table({"sale_key": pa.array(list(sale_keys), pa.string())}))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE touched_sales AS SELECT DISTINCT sale_key FROM touched_arrow"
    )
    con.unregister("touched_arrow")
    # Rebuild the touched sales rows with their totals, then delete-and-insert them: far
    # faster in DuckDB than UPDATE over many rows.
    totals = "subtotal, discount, tax, total, item_count"
    others = ", ".join(
        f"s.{c}" for c in table_columns(con, "core.sales") if c not in totals.split(", ")
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE rebuilt_sales AS
        SELECT {others},
               agg.subtotal, agg.discount, agg.tax, agg.total, agg.item_count
        FROM core.sales s
        JOIN (
            SELECT i.sale_key,
                   sum(i.subtotal)::DECIMAL(18,4) AS subtotal,
                   sum(i.discount)::DECIMAL(18,4) AS discount,
                   sum(i.tax)::DECIMAL(18,4) AS tax,
                   sum(i.total + coalesce(i.tax, 0))::DECIMAL(18,4) AS total,
                   count(*)::INTEGER AS item_count
            FROM core.sale_items i JOIN touched_sales USING (sale_key)
            GROUP BY i.sale_key
        ) agg USING (sale_key)
        """
    )
    con.execute("DELETE FROM core.sales s USING rebuilt_sales r WHERE s.sale_key = r.sale_key")
    columns = ", ".join(table_columns(con, "core.sales"))
    con.execute(f"INSERT INTO core.sales ({columns}) SELECT {columns} FROM rebuilt_sales")
    con.execute("DROP TABLE rebuilt_sales")
    con.execute(
        """
        UPDATE core.sale_items i SET line_no = n.line_no
        FROM (
            SELECT sale_key, line_id,
                   row_number() OVER (PARTITION BY sale_key ORDER BY line_id)::INTEGER AS line_no
            FROM core.sale_items JOIN touched_sales USING (sale_key)
        ) n
        WHERE i.sale_key = n.sale_key AND i.line_id = n.line_id
        """
    )
    con.execute("DROP TABLE touched_sales")


def refresh_stores(con: Connection, stores: Sequence[tuple[str, str, list[str]]]) -> None:
    """core.stores mirrors the config; store ids on sales are re-mapped from location keys."""
    con.execute("DELETE FROM core.stores")
    if stores:
        con.executemany("INSERT INTO core.stores VALUES (?, ?, ?)", [list(s) for s in stores])


def remap_store_ids(con: Connection, source: str, mapping: dict[str, str]) -> None:
    """Apply the config's location-key -> store mapping to a source's sales and inventory,
    so a store added to the config later also maps history already loaded. A sale whose
    location key is not configured falls back to its location name (flat files key stores
    by LocationID or by Facility Name)."""
    con.execute("CREATE OR REPLACE TEMP TABLE store_map (location_key VARCHAR, store_id VARCHAR)")
    if mapping:
        con.executemany("INSERT INTO store_map VALUES (?, ?)", [[k, v] for k, v in mapping.items()])
    con.execute(
        """
        UPDATE core.sales t SET store_id = m.store_id
        FROM (SELECT DISTINCT x.location_key, x.location_name,
                     coalesce(by_key.store_id, by_name.store_id) AS store_id
              FROM core.sales x
              LEFT JOIN store_map by_key ON by_key.location_key = x.location_key
              LEFT JOIN store_map by_name ON by_name.location_key = x.location_name
              WHERE x.source = ?) m
        WHERE t.source = ? AND t.location_key IS NOT DISTINCT FROM m.location_key
          AND t.location_name IS NOT DISTINCT FROM m.location_name
          AND t.store_id IS DISTINCT FROM m.store_id
        """,
        [source, source],
    )
    con.execute(
        """
        UPDATE core.inventory t SET store_id = m.store_id
        FROM (SELECT DISTINCT x.location_key, sm.store_id
              FROM core.inventory x LEFT JOIN store_map sm USING (location_key)
              WHERE x.source = ?) m
        WHERE t.source = ? AND t.location_key IS NOT DISTINCT FROM m.location_key
          AND t.store_id IS DISTINCT FROM m.store_id
        """,
        [source, source],
    )
    con.execute("DROP TABLE store_map")


def refresh_unmapped_locations(con: Connection, source: str) -> int:
    """ops.unmapped_locations lists a source's location keys with sales but no store."""
    con.execute("DELETE FROM ops.unmapped_locations WHERE source = ?", [source])
    # Inventory locations count too (with 0 sales): a store's stock needs its store mapped.
    con.execute(
        """
        INSERT INTO ops.unmapped_locations
        SELECT source, location_key, max(location_name), count(sold_at), min(sold_at),
               max(sold_at)
        FROM (
            SELECT source, location_key, location_name, sold_at FROM core.sales
            WHERE source = ? AND store_id IS NULL AND location_key IS NOT NULL
            UNION ALL
            SELECT source, location_key, location_name, NULL FROM core.inventory
            WHERE source = ? AND store_id IS NULL AND location_key IS NOT NULL
        )
        GROUP BY source, location_key
        """,
        [source, source],
    )
    return con.execute(
        "SELECT count(*) FROM ops.unmapped_locations WHERE source = ?", [source]
    ).fetchone()[0]


def set_state(con: Connection, source: str, entity: str, key: str, value: str | None) -> None:
    con.execute(
        "DELETE FROM ops.sync_state WHERE source = ? AND entity = ? AND key = ?",
        [source, entity, key],
    )
    con.execute(
        "INSERT INTO ops.sync_state VALUES (?, ?, ?, ?, ?)",
        [source, entity, key, value, datetime.now(UTC)],
    )


def get_state(con: Connection, source: str, entity: str, key: str) -> str | None:
    row = con.execute(
        "SELECT value FROM ops.sync_state WHERE source = ? AND entity = ? AND key = ?",
        [source, entity, key],
    ).fetchone()
    return row[0] if row else None


def table_counts(con: Connection, tables: Sequence[str]) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

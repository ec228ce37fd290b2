"""Content hash of a warehouse, per table: what "the same warehouse" means for the fault suite.

Two warehouses are equal when every table has the same rows with the same values, whatever
order they were written in. Columns stamped at load or extraction time (when the run
happened, not what the source said) are left out: they differ between any two runs.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

# Tables whose content a sync decides; ops.loaded_partitions and ops.sync_state are
# bookkeeping (manifest ids, timestamps) and differ between runs by design.
TABLES = (
    "core.personas",
    "core.contacts",
    "core.sales",
    "core.sale_items",
    "core.products",
    "core.inventory",
    "core.stores",
    "loyalty.members",
    "loyalty.points_ledger",
    "loyalty.opt_in_requests",
    "ops.quarantine",
    "ops.unmapped_locations",
)
# Stamped with the wall clock of the run, per table. Snapshot tables (inventory, and
# Webjoint's products, which come with it) version rows by the snapshot's time.
LOAD_TIME_COLUMNS = {
    "core.inventory": {"snapshot_at", "_version"},
    "core.products": {"_version"},
    "loyalty.opt_in_requests": {"queued_at", "updated_at"},
    "ops.quarantine": {"quarantined_at"},
}
# `_version` is "<source's modification time>|<landing version>" (the landing version being
# the extraction's start time), or the landing version alone for snapshots: keep the part
# the source decided.
VERSION = r"""regexp_replace("_version", '\|?[^|]*$', '')"""


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    schema, name = table.split(".")
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    skip = LOAD_TIME_COLUMNS.get(table, set())
    return [
        VERSION if r[0] == "_version" else f'"{r[0]}"::VARCHAR' for r in rows if r[0] not in skip
    ]


def table_hashes(path: Path) -> dict[str, tuple[int, str]]:
    """table -> (rows, md5 of the rows' text sorted), read-only."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        out = {}
        for table in TABLES:
            cols = ", ".join(_columns(con, table))
            out[table] = con.execute(
                f"SELECT count(*), coalesce(md5(string_agg(r, chr(10) ORDER BY r)), '') "
                f"FROM (SELECT list_value({cols})::VARCHAR AS r FROM {table})"
            ).fetchone()
        return out
    finally:
        con.close()


def differences(got: dict[str, tuple[int, str]], want: dict[str, tuple[int, str]]) -> list[str]:
    """Readable per-table differences, empty when the warehouses are equal."""
    return [
        f"{t}: {got.get(t, (0, ''))[0]} rows (hash {got.get(t, (0, ''))[1][:8]}) vs clean "
        f"{want[t][0]} rows (hash {want[t][1][:8]})"
        for t in want
        if got.get(t) != want[t]
    ]

"""Read-only questions about the warehouse, shared by asset checks, metadata and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from aiq_sync.canonical import NATURAL_KEYS
from aiq_sync.warehouse import Connection

SUMMARY_TABLES = (
    "core.personas",
    "core.sales",
    "core.sale_items",
    "core.products",
    "core.inventory",
    "core.stores",
    "core.contacts",
    "loyalty.members",
    "loyalty.points_ledger",
    "loyalty.opt_in_requests",
    "ops.quarantine",
    "ops.unmapped_locations",
)


def duplicate_keys(con: Connection, table: str, limit: int = 5) -> tuple[int, list[tuple]]:
    """How many natural keys of `table` have more than one row, and a few examples."""
    keys = ", ".join(NATURAL_KEYS[table])
    # First over 64-bit hashes of the keys: fixed-size values need a fraction of the memory
    # of grouping the key strings (3M sale items: passes in 24 MB, where grouping needs over
    # 40 MB; a 1M-order nightly ran out of the 128 MB default here, after its load). Hashes
    # can only collide into false duplicates, never hide one: any suspect is counted exactly.
    suspects = con.execute(
        f"SELECT count(*) - count(DISTINCT hash({keys})) FROM {table}"
    ).fetchone()[0]
    if suspects == 0:
        return 0, []
    count = con.execute(
        f"SELECT count(*) FROM (SELECT {keys} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    examples = con.execute(
        f"SELECT {keys}, count(*) FROM {table} GROUP BY ALL HAVING count(*) > 1 LIMIT {limit}"
    ).fetchall()
    return count, examples


def unmapped_locations(con: Connection) -> list[tuple[str, str, int]]:
    return con.execute(
        "SELECT source, location_key, sales_count FROM ops.unmapped_locations "
        "ORDER BY source, sales_count DESC, location_key"
    ).fetchall()


@dataclass(frozen=True)
class QuarantineShare:
    source: str
    rows_in: int
    quarantined: int

    @property
    def share(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


def quarantine_shares(con: Connection) -> list[QuarantineShare]:
    """Per source: rows read (loaded + rejected) and rows quarantined, over what is loaded now."""
    rows = con.execute(
        """
        SELECT source, sum(rows_in), sum(rows_quarantined)
        FROM ops.loaded_partitions GROUP BY source ORDER BY source
        """
    ).fetchall()
    return [QuarantineShare(s, int(n or 0), int(q or 0)) for s, n, q in rows]


def quarantine_reasons(con: Connection, limit: int = 10) -> list[tuple[str, str, int]]:
    """Most common reasons, with the field named (the reason text up to its first quote)."""
    return con.execute(
        f"""
        SELECT source, regexp_replace(reason, ' ''.*$', '') AS kind, count(*) AS n
        FROM ops.quarantine GROUP BY ALL ORDER BY n DESC, kind LIMIT {limit}
        """
    ).fetchall()


def table_counts(con: Connection) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SUMMARY_TABLES}


def render_summary(con: Connection, warehouse_path: str) -> str:
    """The end-of-run table: rows per table, quarantine, unmapped stores, where the file is."""
    counts = table_counts(con)
    width = max(len(t) for t in counts)
    lines = ["", f"{'table':<{width}}  {'rows':>10}", f"{'-' * width}  {'-' * 10}"]
    lines += [f"{t:<{width}}  {n:>10,}" for t, n in counts.items()]
    shares = quarantine_shares(con)
    if shares:
        lines.append("")
        lines.append(
            "quarantined: "
            + ", ".join(
                f"{q.source} {q.quarantined:,} of {q.rows_in:,} ({q.share:.2%})" for q in shares
            )
        )
        for source, kind, n in quarantine_reasons(con, limit=5):
            lines.append(f"  {source}: {n:,} x {kind}")
    unmapped = unmapped_locations(con)
    if unmapped:
        lines.append(
            "unmapped locations (add them to stores[].keys): "
            + ", ".join(f"{s}:{k} ({n:,} sales)" for s, k, n in unmapped)
        )
    lines.append(f"warehouse: {warehouse_path}")
    return "\n".join(lines)

"""Warehouse merges: one row per key, newest version wins in any load order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from aiq_sync import warehouse
from aiq_sync.migrations import LATEST_VERSION


def products(rows: list[tuple[str, str, str | None, str]]) -> pa.Table:
    ids, names, brands, versions = zip(*rows, strict=True)
    return pa.table(
        {
            "source": ["s"] * len(rows),
            "product_id": list(ids),
            "name": list(names),
            "brand": list(brands),
            "price": ["1.50"] * len(rows),
            "_version": list(versions),
        }
    )


def test_migrations_apply_once_and_record_their_version(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with warehouse.open_warehouse(path) as con:
        versions = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        assert versions == LATEST_VERSION
        assert warehouse.migrate(con) == []
    with warehouse.open_warehouse(path) as con:
        schemas = {r[0] for r in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        assert {"core", "loyalty", "ops", "analytics"} <= schemas


def test_newest_version_wins_whatever_the_load_order(tmp_path: Path) -> None:
    old = products([("p1", "Old name", "Acme", "2026-01-01")])
    new = products([("p1", "New name", "Acme", "2026-02-01")])
    results = []
    for order in ((old, new), (new, old)):
        with warehouse.open_warehouse(tmp_path / f"w{len(results)}.duckdb") as con:
            for batch in order:
                warehouse.merge(con, "core.products", batch, ("source", "product_id"))
            results.append(con.execute("SELECT name, price FROM core.products").fetchall())
    assert results[0] == results[1] == [("New name", Decimal("1.5000"))]


def test_duplicates_in_one_batch_collapse_and_counts_are_reported(tmp_path: Path) -> None:
    batch = products([("p1", "A", None, "1"), ("p1", "B", None, "2"), ("p2", "C", None, "1")])
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        first = warehouse.merge(con, "core.products", batch, ("source", "product_id"))
        assert (first.staged, first.inserted, first.updated) == (2, 2, 0)
        again = warehouse.merge(con, "core.products", batch, ("source", "product_id"))
        assert (again.staged, again.inserted, again.updated) == (2, 0, 2)
        rows = con.execute("SELECT product_id, name FROM core.products ORDER BY 1").fetchall()
    assert rows == [("p1", "B"), ("p2", "C")]


def test_sticky_columns_keep_known_values_when_the_newer_row_is_blank(tmp_path: Path) -> None:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        keys = ("source", "product_id")
        warehouse.merge(con, "core.products", products([("p1", "A", "Acme", "1")]), keys)
        warehouse.merge(
            con,
            "core.products",
            products([("p1", "A2", None, "2")]),
            keys,
            keep_existing_when_null=("brand",),
        )
        assert con.execute("SELECT name, brand FROM core.products").fetchall() == [("A2", "Acme")]


def test_money_is_decimal_not_float(tmp_path: Path) -> None:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        kinds = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'core' AND table_name = 'sales'"
            ).fetchall()
        )
    assert kinds["total"] == "DECIMAL(18,4)"
    assert kinds["sold_at"] == "TIMESTAMP WITH TIME ZONE"


def test_a_failed_transaction_leaves_the_previous_state(tmp_path: Path) -> None:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        keys = ("source", "product_id")
        warehouse.merge(con, "core.products", products([("p1", "A", None, "1")]), keys)
        try:
            with warehouse.transaction(con):
                warehouse.merge(con, "core.products", products([("p2", "B", None, "1")]), keys)
                raise RuntimeError("crash mid-load")
        except RuntimeError:
            pass
        assert con.execute("SELECT product_id FROM core.products").fetchall() == [("p1",)]


def test_sticky_columns_survive_a_blank_in_a_newer_row_of_the_same_batch(tmp_path: Path) -> None:
    batch = products([("p1", "Old", "Acme", "1"), ("p1", "New", None, "2")])
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        warehouse.merge(
            con,
            "core.products",
            batch,
            ("source", "product_id"),
            keep_existing_when_null=("brand",),
        )
        rows = con.execute("SELECT name, brand, _version FROM core.products").fetchall()
    assert rows == [("New", "Acme", "2")]


def test_an_older_row_loaded_later_fills_blanks_but_changes_nothing_else(tmp_path: Path) -> None:
    newer = products([("p1", "New", None, "2")])
    older = products([("p1", "Old", "Acme", "1")])
    results = []
    for order in ((newer, older), (older, newer)):
        with warehouse.open_warehouse(tmp_path / f"w{len(results)}.duckdb") as con:
            for batch in order:
                warehouse.merge(
                    con,
                    "core.products",
                    batch,
                    ("source", "product_id"),
                    keep_existing_when_null=("brand",),
                )
            results.append(
                con.execute("SELECT name, brand, _version FROM core.products").fetchall()
            )
    assert results[0] == results[1] == [("New", "Acme", "2")]


def test_recording_a_reloaded_chunk_keeps_one_row_per_partition(tmp_path: Path) -> None:
    LP = warehouse.LoadedPartition
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        warehouse.record_loaded(
            con, "bc", "orders", [LP("2026-01-01", "m1", 10, 0), LP("2026-01-02", "m2", 5, 1)]
        )
        warehouse.record_loaded(con, "bc", "customers", [LP("2026-01-01", "c1", 3, 0)])
        # Day 2 re-landed and re-loaded with day 3: day 2 is replaced, not added.
        warehouse.record_loaded(
            con, "bc", "orders", [LP("2026-01-02", "m2b", 6, 0), LP("2026-01-03", "m3", 7, 2)]
        )
        warehouse.record_loaded(con, "bc", "orders", [])
        assert warehouse.loaded_manifests(con, "bc", "orders") == {
            "2026-01-01": "m1", "2026-01-02": "m2b", "2026-01-03": "m3"
        }  # fmt: skip
        assert warehouse.loaded_manifests(con, "bc", "customers") == {"2026-01-01": "c1"}
        assert con.execute(
            "SELECT rows_in, rows_quarantined FROM ops.loaded_partitions "
            "WHERE entity = 'orders' ORDER BY partition_key"
        ).fetchall() == [(10, 0), (6, 0), (7, 2)]

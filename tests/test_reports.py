"""The unique-key check's question: duplicated natural keys are counted and shown, and a
clean table reports none."""

from __future__ import annotations

from pathlib import Path

from aiq_sync import warehouse
from aiq_sync.reports import duplicate_keys


def test_duplicate_natural_keys_are_counted_with_examples(tmp_path: Path) -> None:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        # Written past the merge (which never duplicates), as a broken load would.
        con.execute(
            """
            INSERT INTO core.sale_items (sale_key, line_id, source, _version)
            SELECT 's:' || (i // 3), (i % 3)::VARCHAR, 's', 'v' FROM range(30000) t(i)
            """
        )
        assert duplicate_keys(con, "core.sale_items") == (0, [])
        con.execute(
            "INSERT INTO core.sale_items (sale_key, line_id, source, _version) "
            "VALUES ('s:7', '1', 's', 'v2'), ('s:7', '1', 's', 'v3'), ('s:9', '0', 's', 'v2')"
        )
        count, examples = duplicate_keys(con, "core.sale_items")
    assert count == 2
    assert sorted(examples) == [("s:7", "1", 3), ("s:9", "0", 2)]

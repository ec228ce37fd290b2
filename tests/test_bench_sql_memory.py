"""The 1M-line SQL memory bench (issue #8) at a tiny scale: its numbers come from a real
`aiq-sync run` over a real SQLite table, and its settings reach the warehouse config."""

import sqlite3

import pytest
import yaml

from aiq_sync.bench.sql_memory import PRODUCTS, main, run_sql_memory

pytestmark = pytest.mark.timeout(300)


def test_every_generated_line_loads_once_with_the_settings_given(tmp_path):
    settings = {"memory_limit": "64MB", "threads": 1}
    result = run_sql_memory(3_000, tmp_path, settings)

    assert result["exit_code"] == 0, (tmp_path / "run.log").read_text()[-2000:]
    assert result["rows_landed"] == result["rows_loaded"] == 3_000
    con = sqlite3.connect(tmp_path / "pos.sqlite")
    tickets, skus = con.execute(
        "SELECT count(DISTINCT ticket_id), count(DISTINCT sku) FROM sale_lines"
    ).fetchone()
    assert result["sales"] == tickets
    # item_id is the product SKU: products are the distinct SKUs, not the line numbers.
    assert result["products"] == skus and 4 < skus <= PRODUCTS
    assert result["peak_rss_mb"] > 0 and result["peak_during"]
    config = yaml.safe_load((tmp_path / "aiq_sync.yaml").read_text())
    assert config["duckdb"] == settings


def test_a_failed_sync_makes_the_bench_exit_non_zero(tmp_path, capsys):
    # 1 MB is below what DuckDB needs to open a load: the run fails and the bench says so.
    code = main(["--lines", "500", "--workdir", str(tmp_path), "--memory-limit", "1MB"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "exit_code: 1" in printed and "rows_loaded: 0" in printed

"""A 50 MB drop file, generated in tmp with a known truth, through `aiq-sync run` (landing +
load + rules): every good line loads, every bad line is quarantined, nothing else."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from aiq_sync import warehouse
from aiq_sync.config import AppConfig
from assets.runner import run_sync
from tests.conftest import HEADER, line

pytestmark = pytest.mark.e2e

TARGET_BYTES = 50 * 1024 * 1024
LINES_PER_SALE = 3
BAD_EVERY = 997  # this line has no TransactionID: quarantined, the rest of the file loads


def _generate(path: Path) -> tuple[int, int, int]:
    """Write lines until the file is 50 MB; returns (good lines, bad lines, sales)."""
    good = bad = 0
    sales: set[str] = set()
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        n = 0
        while handle.tell() < TARGET_BYTES:
            n += 1
            sale = f"T{n // LINES_PER_SALE}"
            row = line(
                TransactionID="" if n % BAD_EVERY == 0 else sale,
                Item_ID=f"I{n % LINES_PER_SALE}",
                Patient_Number=f"C{n % 5000}",
                Patient_email=f"shopper{n % 5000}@example.com",
                LocationID="101" if n % 2 else "102",
                TransactionDate=f"2026/09/{1 + n % 28:02d}",
            )
            writer.writerow([row[h] for h in HEADER])
            if n % BAD_EVERY == 0:
                bad += 1
            else:
                good += 1
                sales.add(sale)
    return good, bad, len(sales)


def test_a_50_mb_drop_file_loads_every_good_line(
    tmp_path: Path, make_config: Callable[..., AppConfig]
) -> None:
    config = make_config()
    drop = tmp_path / "drops" / "big_export.csv"
    good, bad, sales = _generate(drop)
    assert drop.stat().st_size >= TARGET_BYTES
    lines: list[str] = []
    outcome = run_sync(config, instance=dg.DagsterInstance.ephemeral(), out=lines.append)
    assert outcome.ok, "\n".join(lines + outcome.failures)
    assert any(f"big_export.csv: {good + bad} rows" in text for text in lines), lines
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        got = con.execute(
            "SELECT (SELECT count(*) FROM core.sale_items), (SELECT count(*) FROM core.sales), "
            "(SELECT count(*) FROM core.personas), "
            "(SELECT count(*) FROM ops.quarantine WHERE reason LIKE 'TransactionID%'), "
            "(SELECT count(*) FROM ops.quarantine)"
        ).fetchone()
    assert got == (good, sales, 5000, bad, bad)

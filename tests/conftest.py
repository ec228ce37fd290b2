"""Shared fixtures: drop files written by hand, configs in tmp folders, real DuckDB files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from aiq_sync.config import AppConfig, load_config

HEADER = [
    "TransactionID", "TransactionRefundID", "Patient Number", "LocationID", "Order Type",
    "Item ID", "ProductName", "Product Category Name", "VendorName", "InventoryQuantity",
    "Agg - Product Sales (subtotal)", "AllocatedTax", "Product Discount", "AllocatedPrice",
    "TransactionDate", "Completed Time", "Patient Postal Code", "Patient Address",
    "Patient Name", "Patient email", "Patient Phone Default", "Patient Age", "Facility Name",
]  # fmt: skip


def line(**overrides: str) -> dict[str, str]:
    """A valid drop line; keyword names are header names with spaces/dashes as underscores."""
    row = {
        "TransactionID": "T1", "TransactionRefundID": "", "Patient Number": "C1",
        "LocationID": "101", "Order Type": "Retail", "Item ID": "I1",
        "ProductName": "Blue Dream 3.5g", "Product Category Name": "Flower", "VendorName": "Acme",
        "InventoryQuantity": "1", "Agg - Product Sales (subtotal)": "40.00",
        "AllocatedTax": "8.00", "Product Discount": "0.00", "AllocatedPrice": "40.00",
        "TransactionDate": "2026/09/05", "Completed Time": "15:04:05",
        "Patient Postal Code": "95814", "Patient Address": "1 Main St, Apt 2",
        "Patient Name": "Jane Smith", "Patient email": "Jane@Example.com",
        "Patient Phone Default": "9162345678", "Patient Age": "1990/01/02",
        "Facility Name": "Midtown",
    }  # fmt: skip
    aliases = {
        h.replace(" ", "_").replace("-", "_").replace("(", "").replace(")", ""): h for h in HEADER
    }
    for key, value in overrides.items():
        row[aliases.get(key, key)] = value
    return row


def write_drop(
    path: Path,
    rows: list[dict[str, str]],
    *,
    header: list[str] | None = None,
    bom: bool = False,
    crlf: bool = False,
) -> Path:
    header = header or HEADER
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(h, "") for h in header])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode() + buffer.getvalue().encode("utf-8"))
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., AppConfig]:
    """Write an aiq_sync.yaml in tmp_path (drops folder `drops/`) and load it."""

    def build(**overrides: object) -> AppConfig:
        raw: dict[str, object] = {
            "warehouse": "data/aiq.duckdb",
            "landing": "data/landing",
            "schedule": {"cron": "0 3 * * *", "timezone": "America/Los_Angeles"},
            "stores": [
                {"id": "midtown", "name": "Midtown", "keys": {"drops": "101"}},
                {"id": "mission", "name": "Mission", "keys": {"drops": ["102", "Mission SF"]}},
            ],
            "sources": [{"name": "drops", "type": "file_drop", "location": "drops"}],
        }
        raw.update(overrides)
        (tmp_path / "drops").mkdir(exist_ok=True)
        path = tmp_path / "aiq_sync.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return load_config(path)

    return build


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests use ephemeral Dagster instances unless they set DAGSTER_HOME themselves.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("AIQ_SYNC_CONFIG", raising=False)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

"""Dagster resources built from the config."""

from __future__ import annotations

from dagster_duckdb import DuckDBResource

from aiq_sync.config import AppConfig

# Every asset that writes DuckDB runs in this pool; dagster.yaml limits pools to 1 slot, so
# there is a single writer at a time and concurrent runs wait instead of hitting lock errors.
DUCKDB_WRITER_POOL = "duckdb_writer"


def duckdb_resource(config: AppConfig) -> DuckDBResource:
    config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return DuckDBResource(database=str(config.warehouse_path))

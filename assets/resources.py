"""Dagster resources built from the config."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from aiq_sync import warehouse
from aiq_sync.config import AppConfig, DuckDBSettings
from aiq_sync.writer_lock import writer_lock

# Every asset that writes DuckDB runs in this pool; dagster.yaml limits pools to 1 slot, so
# there is a single writer at a time and concurrent runs wait instead of hitting lock errors.
DUCKDB_WRITER_POOL = "duckdb_writer"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse for writing assets.

    A connection holds the cross-process writer lock (`aiq_sync.writer_lock`): the pool
    serialises runs of one Dagster instance, the lock also serialises them with an
    `aiq-sync run` or a second instance on the same file. It carries the config's `duckdb`
    limits (memory, threads, spill folder) and is closed on exit, even when a step fails.
    """

    database: str
    memory_limit: str = DuckDBSettings().memory_limit
    threads: int | None = None
    temp_directory: str | None = None

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        settings = DuckDBSettings(
            memory_limit=self.memory_limit,
            threads=self.threads,
            temp_directory=self.temp_directory,
        )
        with writer_lock(self.database):
            # waits out another process's open file
            con = warehouse.connect(self.database, settings=settings)
            try:
                yield con
            except duckdb.OutOfMemoryException as exc:
                raise warehouse.out_of_memory(con, exc) from exc
            finally:
                con.close()


def duckdb_resource(config: AppConfig) -> WarehouseResource:
    config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    settings = config.duckdb_settings
    return WarehouseResource(
        database=str(config.warehouse_path),
        memory_limit=settings.memory_limit,
        threads=settings.threads,
        temp_directory=settings.temp_directory,
    )

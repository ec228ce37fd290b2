"""Landing: raw records per (source, entity, partition) as Parquet, written atomically.

Layout: `<root>/<source>/<entity>/<date=YYYY-MM-DD | key=...>/` holding
`data-<id>.parquet`, optionally `rejects-<id>.parquet` (rows that could not even be parsed),
and `_manifest.json`. The manifest is the commit point: data files are written under a
fresh id first, then the manifest is replaced with `os.replace` (atomic on POSIX), then
files of older ids are removed. A crash at any step leaves the previous manifest and the
files it names intact, so readers always see one complete partition. Extraction never
opens DuckDB.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

MANIFEST = "_manifest.json"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

REJECTS_SCHEMA = pa.schema([("_line", pa.int64()), ("reason", pa.string()), ("raw", pa.string())])


class Manifest(BaseModel):
    manifest_id: str
    source: str
    entity: str
    partition_key: str
    status: Literal["ok", "unreadable"] = "ok"
    rows: int = 0
    rejected: int = 0
    # Orders competing versions of the same record across partitions (newest wins).
    version: str = ""
    window_start: datetime | None = None
    window_end: datetime | None = None
    requests: int = 0
    extracted_at: datetime
    data_file: str | None = None
    rejects_file: str | None = None
    error: str | None = None
    # What was read: file name/size/mtime for drops; endpoint facts for APIs. Never secrets.
    origin: dict[str, Any] = Field(default_factory=dict)


class Landing:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def partition_dir(self, source: str, entity: str, partition_key: str) -> Path:
        label = (
            f"date={partition_key}"
            if _DAY.match(partition_key)
            else f"key={quote(partition_key, safe='')}"
        )
        return self.root / source / entity / label

    def open_partition(self, source: str, entity: str, partition_key: str) -> PartitionWriter:
        """A writer that streams batches into a new data file; `commit()` makes it current."""
        folder = self.partition_dir(source, entity, partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        return PartitionWriter(folder, source, entity, partition_key)

    def write(
        self,
        source: str,
        entity: str,
        partition_key: str,
        batches: pa.Table | Iterable[pa.RecordBatch] | None,
        *,
        schema: pa.Schema | None = None,
        rejects: pa.Table | None = None,
        status: Literal["ok", "unreadable"] = "ok",
        error: str | None = None,
        late_fields: Callable[[], dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Manifest:
        """Write a partition and commit it by replacing its manifest. Re-running replaces.

        `late_fields` is called after the data is written, for manifest fields only known
        then (e.g. how many requests the extraction made).
        """
        writer = self.open_partition(source, entity, partition_key)
        try:
            if batches is not None:
                if isinstance(batches, pa.Table):
                    schema = batches.schema
                    batches = batches.to_batches()
                writer.start_data(schema)
                for batch in batches:
                    writer.write_batch(batch)
            if rejects is not None and rejects.num_rows:
                writer.write_rejects(rejects)
            return writer.commit(
                status=status, error=error, **fields, **(late_fields() if late_fields else {})
            )
        except BaseException:
            writer.abort()
            raise

    def manifest(self, source: str, entity: str, partition_key: str) -> Manifest | None:
        path = self.partition_dir(source, entity, partition_key) / MANIFEST
        return _read_manifest(path)

    def manifests(self, source: str, entity: str) -> list[Manifest]:
        folder = self.root / source / entity
        if not folder.is_dir():
            return []
        found = (_read_manifest(p / MANIFEST) for p in sorted(folder.iterdir()) if p.is_dir())
        return [m for m in found if m is not None]

    def data_path(self, manifest: Manifest) -> Path | None:
        if manifest.data_file is None:
            return None
        return self.partition_dir(manifest.source, manifest.entity, manifest.partition_key) / (
            manifest.data_file
        )

    def read(self, manifest: Manifest) -> pa.Table | None:
        path = self.data_path(manifest)
        return pq.read_table(path) if path is not None else None

    def read_slices(self, manifest: Manifest, rows: int) -> Iterator[pa.Table]:
        """The partition's data, `rows` at a time (bounded memory for any partition size)."""
        path = self.data_path(manifest)
        if path is None:
            return
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=rows):
            yield pa.Table.from_batches([batch])

    def read_rejects(self, manifest: Manifest) -> pa.Table:
        if manifest.rejects_file is None:
            return REJECTS_SCHEMA.empty_table()
        folder = self.partition_dir(manifest.source, manifest.entity, manifest.partition_key)
        return pq.read_table(folder / manifest.rejects_file)

    def last_extracted_at(self, source: str) -> datetime | None:
        """When anything of this source last landed (for 'frozen since')."""
        folder = self.root / source
        if not folder.is_dir():
            return None
        times = [
            m.extracted_at
            for entity in folder.iterdir()
            if entity.is_dir()
            for m in self.manifests(source, entity.name)
        ]
        return max(times, default=None)


def _read_manifest(path: Path) -> Manifest | None:
    if not path.is_file():
        return None
    return Manifest.model_validate_json(path.read_text(encoding="utf-8"))


class PartitionWriter:
    """Streams one partition's data (memory bounded by a batch), then commits its manifest.

    Data goes to `data-<id>.parquet` under a temporary name; `commit()` renames it in and
    atomically replaces `_manifest.json`, then removes files of older ids. Until `commit()`
    returns, readers keep seeing the previous manifest and its files.
    """

    def __init__(self, folder: Path, source: str, entity: str, partition_key: str):
        self.folder = folder
        self.source, self.entity, self.partition_key = source, entity, partition_key
        self.manifest_id = uuid.uuid4().hex[:16]
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._data_file: str | None = None
        self._rejects_file: str | None = None
        self._rejected = 0

    def _tmp(self, name: str) -> Path:
        return self.folder / f".{name}.tmp"

    def start_data(self, schema: pa.Schema | None) -> None:
        self._data_file = f"data-{self.manifest_id}.parquet"
        self._schema = schema

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if self._data_file is None:
            self.start_data(batch.schema)
        if self._writer is None:
            assert self._data_file is not None
            self._writer = pq.ParquetWriter(
                self._tmp(self._data_file), self._schema or batch.schema, compression="zstd"
            )
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def write_rejects(self, rejects: pa.Table) -> None:
        self._rejects_file = f"rejects-{self.manifest_id}.parquet"
        pq.write_table(rejects, self._tmp(self._rejects_file), compression="zstd")
        self._rejected = rejects.num_rows

    def commit(self, **fields: Any) -> Manifest:
        if self._data_file is not None:
            if self._writer is None:  # no rows: still an explicit, empty partition
                if self._schema is None:
                    raise ValueError("an empty partition needs an explicit schema")
                self._writer = pq.ParquetWriter(
                    self._tmp(self._data_file), self._schema, compression="zstd"
                )
            self._writer.close()
            self._writer = None
        for name in (self._data_file, self._rejects_file):
            if name is not None:
                _fsync(self._tmp(name))
                os.replace(self._tmp(name), self.folder / name)
        manifest = Manifest(
            manifest_id=self.manifest_id,
            source=self.source,
            entity=self.entity,
            partition_key=self.partition_key,
            rows=self.rows,
            rejected=self._rejected,
            extracted_at=datetime.now(UTC),
            data_file=self._data_file,
            rejects_file=self._rejects_file,
            **fields,
        )
        tmp = self._tmp(f"{MANIFEST}.{self.manifest_id}")
        tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, self.folder / MANIFEST)
        keep = {MANIFEST, self._data_file, self._rejects_file}
        for stale in self.folder.iterdir():
            if stale.name not in keep and not stale.name.startswith("."):
                stale.unlink(missing_ok=True)
        return manifest

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for name in (self._data_file, self._rejects_file):
            if name is not None:
                self._tmp(name).unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest.model_dump_json(include={"rows", "rejected", "status", "error"}))

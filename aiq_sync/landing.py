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
from collections.abc import Iterable
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
        **fields: Any,
    ) -> Manifest:
        """Write a partition and commit it by replacing its manifest. Re-running replaces."""
        folder = self.partition_dir(source, entity, partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        manifest_id = uuid.uuid4().hex[:16]
        rows = 0
        data_file = None
        if batches is not None:
            data_file = f"data-{manifest_id}.parquet"
            rows = _write_parquet(folder / data_file, batches, schema)
        rejects_file = None
        rejected = 0
        if rejects is not None and rejects.num_rows:
            rejects_file = f"rejects-{manifest_id}.parquet"
            rejected = _write_parquet(folder / rejects_file, rejects, rejects.schema)
        manifest = Manifest(
            manifest_id=manifest_id,
            source=source,
            entity=entity,
            partition_key=partition_key,
            status=status,
            rows=rows,
            rejected=rejected,
            extracted_at=datetime.now(UTC),
            data_file=data_file,
            rejects_file=rejects_file,
            error=error,
            **fields,
        )
        tmp = folder / f".{MANIFEST}.{manifest_id}.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, folder / MANIFEST)
        keep = {MANIFEST, data_file, rejects_file}
        for stale in folder.iterdir():
            if stale.name not in keep and not stale.name.startswith("."):
                stale.unlink(missing_ok=True)
        return manifest

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


def _write_parquet(
    path: Path, batches: pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema | None
) -> int:
    """Stream batches into one Parquet file (memory bounded by a batch), then rename it in."""
    tmp = path.with_name(f".{path.name}.tmp")
    rows = 0
    if isinstance(batches, pa.Table):
        schema = batches.schema
        batches = batches.to_batches()
    writer: pq.ParquetWriter | None = None
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema or batch.schema, compression="zstd")
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is None:
            if schema is None:
                raise ValueError("an empty partition needs an explicit schema")
            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    _fsync(tmp)
    os.replace(tmp, path)
    return rows


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest.model_dump_json(include={"rows", "rejected", "status", "error"}))

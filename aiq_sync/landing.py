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

import ctypes
import functools
import json
import os
import re
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
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


@dataclass
class OpenFiles:
    """Parquet data files open for writing (each holds its pending row group in memory)."""

    now: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def closed(self) -> None:
        self.now -= 1


def rows_within(meta: pq.FileMetaData, max_bytes: int) -> int:
    """How many rows of this Parquet file make about `max_bytes` uncompressed (at least 1)."""
    if meta.num_rows == 0:
        return 1
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return max(1, int(max_bytes * meta.num_rows // max(size, 1)))


class Landing:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        # Across every writer of this landing: lets a back-fill's memory bound be checked.
        self.open_files = OpenFiles()

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
        return PartitionWriter(folder, source, entity, partition_key, self.open_files)

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

    def read_slices(
        self, manifest: Manifest, rows: int, max_bytes: int | None = None
    ) -> Iterator[pa.Table]:
        """The partition's data, `rows` at a time, and fewer when its rows are large: about
        `max_bytes` of uncompressed data per slice (bounded memory for any partition)."""
        path = self.data_path(manifest)
        if path is None:
            return
        # One column chunk at a time on this thread: pre-buffering and reader threads hold
        # whole row groups and thread-local arenas for no gain on day-sized files.
        parquet = pq.ParquetFile(path, pre_buffer=False)
        if max_bytes is not None:
            rows = min(rows, rows_within(parquet.metadata, max_bytes))
        for batch in parquet.iter_batches(batch_size=rows, use_threads=False):
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

    `suspend()` closes the open file to release its memory; a later batch starts another
    temporary part, and the parts are merged into the one data file before the commit.
    """

    def __init__(
        self,
        folder: Path,
        source: str,
        entity: str,
        partition_key: str,
        open_files: OpenFiles | None = None,
    ):
        self.folder = folder
        self.source, self.entity, self.partition_key = source, entity, partition_key
        self.manifest_id = uuid.uuid4().hex[:16]
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._data_file: str | None = None
        self._parts: list[Path] = []  # temporary data files, in write order
        self._rejects_file: str | None = None
        self._rejected = 0
        self._open_files = open_files or OpenFiles()

    def _tmp(self, name: str) -> Path:
        return self.folder / f".{name}.tmp"

    def start_data(self, schema: pa.Schema | None) -> None:
        self._data_file = f"data-{self.manifest_id}.parquet"
        self._schema = schema

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if self._data_file is None:
            self.start_data(batch.schema)
        if self._writer is None:
            self._schema = self._schema or batch.schema
            self._open_part()
        assert self._writer is not None
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _open_part(self) -> None:
        assert self._data_file is not None and self._schema is not None
        # The first part has the data file's own temporary name: no merge when it is the only.
        name = f"{self._data_file}.{len(self._parts)}" if self._parts else self._data_file
        self._parts.append(self._tmp(name))
        self._writer = pq.ParquetWriter(self._parts[-1], self._schema, compression="zstd")
        self._open_files.opened()

    def suspend(self) -> None:
        """Finish the open part on disk (still uncommitted), releasing its memory."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._open_files.closed()

    def write_rejects(self, rejects: pa.Table) -> None:
        self._rejects_file = f"rejects-{self.manifest_id}.parquet"
        pq.write_table(rejects, self._tmp(self._rejects_file), compression="zstd")
        self._rejected = rejects.num_rows

    def commit(self, **fields: Any) -> Manifest:
        return commit_all([(self, fields)])[0]

    def _close_data(self) -> list[Path]:
        """Finish the data file; returns the staged files that must be durable first."""
        if self._data_file is not None:
            if not self._parts:  # no rows: still an explicit, empty partition
                if self._schema is None:
                    raise ValueError("an empty partition needs an explicit schema")
                self._open_part()
            self.suspend()
            if len(self._parts) > 1:
                self._merge_parts()
        return [self._tmp(n) for n in (self._data_file, self._rejects_file) if n is not None]

    def _merge_parts(self) -> None:
        """Rewrite the parts as one file, a batch at a time (a day's data read back once)."""
        assert self._data_file is not None
        merged = self._tmp(f"{self._data_file}.merged")
        self._parts.append(merged)  # removed by abort() if the merge fails
        self._open_files.opened()
        try:
            with pq.ParquetWriter(merged, self._schema, compression="zstd") as out:
                for part in self._parts[:-1]:
                    with pq.ParquetFile(part) as parquet:
                        for batch in parquet.iter_batches():
                            out.write_batch(batch)
        finally:
            self._open_files.closed()
        os.replace(merged, self._parts[0])
        for part in self._parts[1:-1]:
            part.unlink()
        del self._parts[1:]

    def _stage_manifest(self, fields: dict[str, Any]) -> tuple[Manifest, Path]:
        """Move the (durable) data in and write the manifest under a temporary name."""
        for name in (self._data_file, self._rejects_file):
            if name is not None:
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
        return manifest, tmp

    def _publish(self, staged: Path) -> None:
        """The commit point: the manifest replaces the previous one; old files go."""
        os.replace(staged, self.folder / MANIFEST)
        keep = {MANIFEST, self._data_file, self._rejects_file}
        for stale in self.folder.iterdir():
            if stale.name not in keep and not stale.name.startswith("."):
                stale.unlink(missing_ok=True)

    def abort(self) -> None:
        self.suspend()
        for path in self._parts:
            path.unlink(missing_ok=True)
        if self._rejects_file is not None:
            self._tmp(self._rejects_file).unlink(missing_ok=True)


def commit_all(writers: list[tuple[PartitionWriter, dict[str, Any]]]) -> list[Manifest]:
    """Commit many partitions (a back-fill pass: one per day) with two flushes to disk in all
    instead of two per partition: every data file durable, then every manifest written and
    durable, then the manifests renamed in. A crash before the last step leaves each partition
    at its previous manifest, as `commit()` of one partition does."""
    for writer, _ in writers:  # first, so that a merge of parts adds one open file at most
        writer.suspend()
    data = [path for writer, _ in writers for path in writer._close_data()]
    _make_durable(data)
    staged = [writer._stage_manifest(fields) for writer, fields in writers]
    _make_durable([tmp for _, tmp in staged])
    for (writer, _), (_, tmp) in zip(writers, staged, strict=True):
        writer._publish(tmp)
    return [manifest for manifest, _ in staged]


_K = TypeVar("_K", bound=Hashable)


class BoundedWriters(Generic[_K]):
    """The writers of many partitions filled in one pass (a back-fill: one per day), with at
    most `max_open` files open: an open Parquet file holds its last row group in memory
    (~1 MB for a day of 70 orders), so a two-year pass with every day open held ~800 MB.
    Rows arrive mostly in time order, so the least recently written partition is suspended;
    a late row for it starts another part, merged at the commit. Nothing is committed here
    (see `commit_all`)."""

    def __init__(self, writers: Mapping[_K, PartitionWriter], max_open: int):
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.writers, self.max_open = writers, max_open
        self._recent: OrderedDict[_K, PartitionWriter] = OrderedDict()

    def write_batch(self, key: _K, batch: pa.RecordBatch) -> None:
        writer = self.writers[key]
        if key in self._recent:
            self._recent.move_to_end(key)
        else:
            while len(self._recent) >= self.max_open:
                self._recent.popitem(last=False)[1].suspend()
            self._recent[key] = writer
        writer.write_batch(batch)


# Above this many files one syncfs(2) of the landing's file system beats a fsync per file
# (each fsync waits for its own journal commit: ~4 ms here, x2 per partition, x730 days).
_SYNCFS_MIN_FILES = 8


def _make_durable(paths: list[Path]) -> None:
    if len(paths) >= _SYNCFS_MIN_FILES and _syncfs(paths[0].parent):
        return
    for path in paths:
        _fsync(path)


def _syncfs(folder: Path) -> bool:
    """Flush the file system holding `folder` (Linux); False where unavailable."""
    libc = _libc()
    if libc is None:
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        return libc.syncfs(fd) == 0
    finally:
        os.close(fd)


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest.model_dump_json(include={"rows", "rejected", "status", "error"}))

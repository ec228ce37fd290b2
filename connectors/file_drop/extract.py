"""Land one drop file: stream its rows (or its rejection) into a partition."""

from __future__ import annotations

from datetime import UTC, datetime

from aiq_sync.landing import Landing, Manifest
from connectors.file_drop.normalise import ENTITY
from connectors.file_drop.reader import (
    RAW_SCHEMA,
    DropFile,
    DropStream,
    UnreadableFile,
    rejects_table,
)


def partition_key(drop: DropFile) -> str:
    return drop.name


def land_drop_file(landing: Landing, source: str, drop: DropFile) -> Manifest:
    """Parse `drop` and land it under partition `<file name>`; re-landing replaces it.

    Rows stream to Parquet a batch at a time, so a 1 GB file needs no more memory than a
    small one. A file that turns out unreadable half-way (bad UTF-8 deep inside) lands as
    `unreadable`, with nothing from it loaded. The manifest's version (modification time,
    then name) decides which file wins when two carry the same (TransactionID, Item ID).
    """
    if drop.path is None:
        raise ValueError(f"{drop.name} has not been fetched to a local file")
    stream = DropStream(drop.path)
    writer = landing.open_partition(source, ENTITY, partition_key(drop))
    error: str | None = None
    try:
        writer.start_data(RAW_SCHEMA)
        for batch in stream.batches():
            writer.write_batch(batch)
    except UnreadableFile as exc:
        writer.abort()
        error = str(exc)
        writer = landing.open_partition(source, ENTITY, partition_key(drop))
    except BaseException:
        writer.abort()
        raise
    origin = {
        "file": drop.name,
        "size": drop.size,
        "modified_at": datetime.fromtimestamp(drop.mtime_ns / 1e9, UTC).isoformat(),
        "fingerprint": drop.fingerprint,
        "sha256": stream.sha256,
        "unknown_columns": stream.unknown_columns,
    }
    if drop.item_id is not None:  # a remote file: which item and which version of it
        origin.update(item_id=drop.item_id, ctag=drop.ctag)
    if stream.rejects and error is None:
        writer.write_rejects(rejects_table(stream.rejects))
    return writer.commit(
        status="unreadable" if error else "ok",
        error=error,
        version=f"{drop.mtime_ns:020d}|{drop.name}",
        origin=origin,
    )

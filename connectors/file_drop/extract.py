"""Land one drop file: parse it and write its rows (or its rejection) as a partition."""

from __future__ import annotations

from datetime import UTC, datetime

from aiq_sync.landing import Landing, Manifest
from connectors.file_drop.normalise import ENTITY
from connectors.file_drop.reader import RAW_SCHEMA, DropFile, parse_drop_file


def partition_key(drop: DropFile) -> str:
    return drop.name


def land_drop_file(landing: Landing, source: str, drop: DropFile) -> Manifest:
    """Parse `drop` and land it under partition `<file name>`; re-landing replaces it.

    The manifest's version (modification time, then name) decides which file wins when
    two carry the same (TransactionID, Item ID): the newest file.
    """
    parsed = parse_drop_file(drop.path)
    origin = {
        "file": drop.name,
        "size": drop.size,
        "modified_at": datetime.fromtimestamp(drop.mtime_ns / 1e9, UTC).isoformat(),
        "fingerprint": drop.fingerprint,
        "sha256": parsed.sha256,
        "unknown_columns": parsed.unknown_columns,
    }
    return landing.write(
        source,
        ENTITY,
        partition_key(drop),
        parsed.table,
        schema=RAW_SCHEMA,
        rejects=parsed.rejects,
        status="unreadable" if parsed.error else "ok",
        error=parsed.error,
        version=f"{drop.mtime_ns:020d}|{drop.name}",
        origin=origin,
    )

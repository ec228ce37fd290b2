"""Which normaliser turns each source type's landed records into canonical rows."""

from __future__ import annotations

from aiq_sync.canonical import Normaliser
from connectors.file_drop import FileDropNormaliser

NORMALISERS: dict[str, list[Normaliser]] = {
    "file_drop": [FileDropNormaliser()],
}


def normalisers_for(source_type: str) -> list[Normaliser]:
    try:
        return NORMALISERS[source_type]
    except KeyError:
        raise KeyError(f"no connector for source type {source_type!r}") from None

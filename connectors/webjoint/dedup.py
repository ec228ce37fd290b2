"""Newest version per id over a whole listing pass, in bounded memory.

The API repeats rows, sometimes as an older version of the same record, anywhere in a
listing. Keeping "the newest" is exact only after every copy has been seen, and deciding
whether a record belongs to the window must look at that newest copy (a stale copy inside the
window must not pass when the current version lies outside it). Rows are therefore spooled to
an anonymous temporary file while the listing is paged; memory holds one small entry per id.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

Version = tuple[str, str]  # (update time as sortable text, content digest)


class NewestById:
    def __init__(self) -> None:
        # Closed by close() / the with block that owns this object.
        self._file = tempfile.TemporaryFile(prefix="aiq-webjoint-")  # noqa: SIM115
        # id -> (version, offset, length, update time); rows without id are all kept.
        self._newest: dict[str, tuple[Version, int, int, datetime | None]] = {}
        self._anonymous: list[tuple[int, int, datetime | None]] = []
        self.rows = 0

    @property
    def duplicates(self) -> int:
        return self.rows - len(self._newest) - len(self._anonymous)

    def add(self, key: str | None, version: Version, moment: datetime | None, row: Any) -> None:
        data = json.dumps(row, separators=(",", ":")).encode()
        offset = self._file.seek(0, 2)
        self._file.write(data)
        self.rows += 1
        if key is None:
            self._anonymous.append((offset, len(data), moment))
            return
        held = self._newest.get(key)
        if held is None or version > held[0]:  # equal: the first copy stays
            self._newest[key] = (version, offset, len(data), moment)

    def __iter__(self) -> Iterator[tuple[str | None, datetime | None, dict[str, Any]]]:
        """(id, update time, row) of every newest version, in listing order."""
        entries = [(o, n, moment, key) for key, (_, o, n, moment) in self._newest.items()]
        entries += [(offset, length, moment, None) for offset, length, moment in self._anonymous]
        entries.sort(key=lambda e: e[0])
        for offset, length, moment, key in entries:
            self._file.seek(offset)
            yield key, moment, json.loads(self._file.read(length))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NewestById:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

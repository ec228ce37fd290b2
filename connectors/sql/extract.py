"""SQL sale lines -> flat-file raw lines, by time window, in server-side batches.

One query per pass: the mapped columns of the table (or of the configured query, wrapped as
a sub-query), `cursor >= start AND cursor < end ORDER BY cursor`, executed with
`stream_results` + `yield_per(batch_rows)`, so the driver holds one batch at a time
(PostgreSQL: a server-side cursor; SQLite steps through rows).

Bounds are bound in the cursor column's own representation, found by reading one row first
(which also proves the table and every mapped column exist): `timestamptz` (aware),
`timestamp` (naive, in `cursor_timezone`, default the source's time zone), `date`, or
ISO-8601 text (SQLite), where the bound copies the column's format so text comparison stays
chronological.

Rows become the flat-file raw line table (connectors/file_drop/reader.RAW_SCHEMA): every
value as text, the sale time as the source-local TransactionDate + Completed Time, `_line`
the row's place in the pass (a later row wins a tie, as a later line of a file does). The
flat-file normaliser then does the rest, unchanged. No URL or password is ever landed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from aiq_sync.config import SqlEntity, SqlSource
from aiq_sync.extract import Window
from aiq_sync.normalise import local_to_utc
from connectors.file_drop.reader import COLUMNS, RAW_SCHEMA
from connectors.sql.database import Database, SqlSourceError

ENTITY = "lines"
_DATE_FIELDS = ("transaction_date", "birth_date")


@dataclass(frozen=True)
class CursorKind:
    """How the cursor column stores time: aware, naive, date, text, text_utc or text_date."""

    kind: str
    sep: str = " "  # text: between date and time
    suffix: str = ""  # text_utc: 'Z' or '+00:00'


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", errors="replace").strip() or None
    return str(value)


def _texts(values: Sequence[Any], field: str) -> list[str | None]:
    if field in _DATE_FIELDS:
        return [v.date().isoformat() if isinstance(v, datetime) else _text(v) for v in values]
    if field == "completed_time":
        return [
            v.strftime("%H:%M:%S") if isinstance(v, datetime | time) else _text(v) for v in values
        ]
    try:  # fast path: a text column
        return [(v.strip() or None) if v is not None else None for v in values]
    except AttributeError:
        return [_text(v) for v in values]


def _is_date_only(value: Any) -> bool:
    if isinstance(value, date) and not isinstance(value, datetime):
        return True
    return isinstance(value, str) and len(value.strip()) == 10


def _instant(value: Any, tz: ZoneInfo) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip())
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raise TypeError(f"a {type(value).__name__}")
    return local_to_utc(parsed, tz) if parsed.tzinfo is None else parsed.astimezone(UTC)


def instants(
    values: Sequence[Any], naive_tz: str, label: str
) -> tuple[list[datetime | None], bool]:
    """Database time values -> (UTC instants, date_only). Naive values are local to
    `naive_tz` (the first of a repeated hour; a time in a spring-forward gap moves to its
    end); a date-only column gives local midnights and date_only=True."""
    first = next((v for v in values if v is not None), None)
    if first is None:
        return [None] * len(values), False
    tz = ZoneInfo(naive_tz)
    try:
        return [_instant(v, tz) for v in values], _is_date_only(first)
    except (ValueError, TypeError) as exc:
        raise SqlSourceError(
            f"{label}: values like {str(first)[:40]!r} are not times ({exc})"
        ) from None


class SqlLinesExtractor:
    """Reads one entity (a table or query of sale lines) of a SQL source."""

    entity = ENTITY

    def __init__(self, source: SqlSource, spec: SqlEntity, db: Database, timezone: str) -> None:
        self.source = source
        self.spec = spec
        self.db = db
        self.timezone = timezone  # the source's: decides local days and TransactionDate
        self.naive_tz = spec.cursor_timezone or timezone
        self.batch_rows = source.batch_rows
        self.needed = list(dict.fromkeys([*spec.columns.values(), spec.cursor]))
        self.label = f"sources[{source.name}].entities.{ENTITY}"
        # Manifest origin; `file` names the table in ops.quarantine, as a drop's file name does.
        self.origin = {"file": spec.table or "query", "cursor": spec.cursor}
        self._stats = {"requests": 0, "rows": 0, "batches": 0}
        self._line = 0

    # -- the statement ---------------------------------------------------------------------

    def _from(self) -> sa.FromClause:
        columns = [sa.column(name) for name in self.needed]
        if self.spec.table is not None:
            schema, _, name = self.spec.table.rpartition(".")
            return sa.table(name, *columns, schema=schema or None)
        assert self.spec.query is not None
        return sa.text(self.spec.query).columns(*columns).subquery("aiq_source")

    def probe(self, conn: sa.Connection) -> CursorKind | None:
        """How the cursor column stores time (None: no row has a cursor value). Reading one
        row also proves that the table and every mapped column exist."""
        src = self._from()
        cursor = src.c[self.spec.cursor]
        self._stats["requests"] += 1
        row = conn.execute(
            sa.select(*[src.c[n] for n in self.needed]).where(cursor.is_not(None)).limit(1)
        ).first()
        if row is None:
            return None
        value = row[self.needed.index(self.spec.cursor)]
        where = f"{self.label}.cursor: {self.spec.cursor}"
        if isinstance(value, datetime):
            return CursorKind("aware" if value.tzinfo else "naive")
        if isinstance(value, date):
            return CursorKind("date")
        if not isinstance(value, str):
            raise SqlSourceError(
                f"{where} holds {type(value).__name__} values; use a timestamp, date or "
                "ISO-8601 text column"
            )
        text = value.strip()
        if len(text) == 10:
            return CursorKind("text_date")
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise SqlSourceError(
                f"{where} holds {text[:40]!r}, not an ISO-8601 time (YYYY-MM-DD HH:MM:SS)"
            ) from None
        sep = "T" if "T" in text else " "
        if parsed.tzinfo is None:
            return CursorKind("text", sep=sep)
        if parsed.utcoffset() == timedelta(0):
            return CursorKind("text_utc", sep=sep, suffix="Z" if text.endswith("Z") else "+00:00")
        raise SqlSourceError(
            f"{where} holds text times with a UTC offset ({text[:40]!r}); text compares "
            "chronologically only within one zone: use a timestamp column, UTC ('Z') or "
            "local times without an offset"
        )

    def _bounds(self, kind: CursorKind, window: Window) -> tuple[Any, Any]:
        if kind.kind == "aware":
            return window.start, window.end
        if kind.kind == "text_utc":
            start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
            return (
                f"{start:%Y-%m-%d}{kind.sep}{start:%H:%M:%S}{kind.suffix}",
                f"{end:%Y-%m-%d}{kind.sep}{end:%H:%M:%S}{kind.suffix}",
            )
        tz = ZoneInfo(self.naive_tz)
        start, end = window.start.astimezone(tz), window.end.astimezone(tz)
        if kind.kind in ("date", "text_date"):
            first = start.date()
            last = (end - timedelta(microseconds=1)).date() + timedelta(days=1)
            return (first, last) if kind.kind == "date" else (first.isoformat(), last.isoformat())
        if kind.kind == "naive":
            return start.replace(tzinfo=None), end.replace(tzinfo=None)
        return (
            f"{start:%Y-%m-%d}{kind.sep}{start:%H:%M:%S}",
            f"{end:%Y-%m-%d}{kind.sep}{end:%H:%M:%S}",
        )

    # -- extraction ------------------------------------------------------------------------

    def batches(self, window: Window) -> Iterator[tuple[pa.RecordBatch, list[date]]]:
        """Raw line batches of at most `batch_rows` rows in cursor order, each with the
        source-local day of every row's cursor."""
        try:
            with self.db.connect() as conn:
                kind = self.probe(conn)
                if kind is None:
                    return
                start, end = self._bounds(kind, window)
                src = self._from()
                cursor = src.c[self.spec.cursor]
                statement = (
                    sa.select(*[src.c[n] for n in self.needed])
                    .where(cursor >= sa.bindparam("start"), cursor < sa.bindparam("end"))
                    .order_by(cursor)
                )
                self._stats["requests"] += 1
                result = conn.execution_options(
                    stream_results=True, yield_per=self.batch_rows
                ).execute(statement, {"start": start, "end": end})
                for rows in result.partitions():
                    yield self._batch(rows)
        except SQLAlchemyError as exc:
            raise self.db.error(exc, f"entities.{ENTITY}") from None

    def request_stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def _batch(self, rows: Sequence[sa.Row]) -> tuple[pa.RecordBatch, list[date]]:
        n = len(rows)
        self._stats["rows"] += n
        self._stats["batches"] += 1
        by_name = dict(zip(self.needed, zip(*rows, strict=True), strict=True))
        mapping = self.spec.columns
        tz = ZoneInfo(self.timezone)
        cursor_label = f"{self.label}.cursor ({self.spec.cursor})"
        cursor_at, _ = instants(by_name[self.spec.cursor], self.naive_tz, cursor_label)
        days = [v.astimezone(tz).date() for v in cursor_at]  # type: ignore[union-attr]
        arrays: dict[str, Any] = {
            "_line": pa.array(range(self._line + 1, self._line + n + 1), pa.int64())
        }
        self._line += n
        for field in COLUMNS:
            column = mapping.get(field)
            values = _texts(by_name[column], field) if column else None
            arrays[field] = pa.array(values, pa.string()) if values else pa.nulls(n, pa.string())
        # The sale time: sold_at if mapped, else TransactionDate/Completed Time if mapped as in
        # the flat files, else the cursor; as local date and time, like a drop file's.
        if "transaction_date" not in mapping:
            if mapping.get("sold_at", self.spec.cursor) == self.spec.cursor:
                sold = cursor_at
                date_only = _is_date_only(next((v for v in by_name[self.spec.cursor]), None))
            else:
                label = f"{self.label}.columns.sold_at ({mapping['sold_at']})"
                sold, date_only = instants(by_name[mapping["sold_at"]], self.naive_tz, label)
            local = [None if v is None else v.astimezone(tz) for v in sold]
            dates = [None if v is None else f"{v:%Y-%m-%d}" for v in local]
            arrays["transaction_date"] = pa.array(dates, pa.string())
            if not date_only:
                times = [None if v is None else f"{v:%H:%M:%S}" for v in local]
                arrays["completed_time"] = pa.array(times, pa.string())
        return pa.RecordBatch.from_pydict(arrays, schema=RAW_SCHEMA), days

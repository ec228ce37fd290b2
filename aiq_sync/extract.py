"""Extraction for API sources: pages of raw records -> one landed partition.

An API connector provides one `EntityExtractor` per entity (orders, customers, ...). The
extractor turns a time window into pages of raw JSON records; this module streams them
into the landing layer (memory bounded by a page), one partition per source-local day
(or one snapshot per run for entities without a time filter, like inventory).

Raw records are landed as (id, modified_at, payload JSON): lossless, schema-stable when the
API adds fields, and re-normalisable later without calling the API again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa

from aiq_sync.heap import release_free_heap
from aiq_sync.landing import BoundedWriters, Landing, Manifest, commit_all

RAW_RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("modified_at", pa.timestamp("us", tz="UTC")),
        ("payload", pa.string()),
    ]
)


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.start >= self.end:
            raise ValueError(f"empty window {self.start} .. {self.end}")

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def as_metadata(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def day_window(day: date, timezone: str, lookback_days: int = 0) -> Window:
    """The source-local day `day`, widened `lookback_days` earlier (the overlap that catches
    rows modified while an earlier window was being paged)."""
    tz = ZoneInfo(timezone)
    start = datetime.combine(day - timedelta(days=lookback_days), time(), tz)
    end = datetime.combine(day + timedelta(days=1), time(), tz)
    return Window(start.astimezone(UTC), end.astimezone(UTC))


@dataclass(frozen=True)
class RawRecord:
    id: str
    modified_at: datetime | None
    payload: dict[str, Any]


class EntityExtractor(Protocol):
    """One entity of one API source."""

    entity: str
    # True: no time filter; every run lands the whole entity as a snapshot.
    snapshot: bool

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        """Pages of raw records modified inside `window` (None for snapshots)."""
        ...

    def request_stats(self) -> dict[str, Any]:
        """Requests made, retries and waits so far (for metadata); never secrets."""
        ...


Row = tuple[str, datetime | None, str]  # a raw record as landed: id, modified_at, JSON text


def _row(record: RawRecord) -> Row:
    return record.id, record.modified_at, payload_text(record.payload)


def payload_text(payload: Any) -> str:
    """Compact JSON text of a payload: orjson (~6x faster than `json` on order pages), `json`
    for what orjson refuses (integers beyond 64 bits); both parse back to the same values."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(payload, separators=(",", ":"))


def _batch(records: list[RawRecord]) -> pa.RecordBatch:
    return _rows_batch([_row(r) for r in records])


def _rows_batch(rows: list[Row]) -> pa.RecordBatch:
    ids, modified, texts = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(modified, pa.timestamp("us", tz="UTC")),
            pa.array(texts, pa.string()),
        ],
        schema=RAW_RECORD_SCHEMA,
    )


def _batches(pages: Iterable[list[RawRecord]]) -> Iterator[pa.RecordBatch]:
    for page in pages:
        if page:
            yield _batch(page)


def land_entity(
    landing: Landing,
    source: str,
    extractor: EntityExtractor,
    partition_key: str,
    window: Window | None,
) -> Manifest:
    """Extract `window` and land it as `partition_key`, replacing what was there.

    Nothing is committed unless extraction completes: a failure mid-way raises and the
    partition keeps its previous manifest.
    """
    before = int(extractor.request_stats().get("requests", 0))
    started = datetime.now(UTC)
    batches = _batches(extractor.extract(window))
    manifest = landing.write(
        source,
        extractor.entity,
        partition_key,
        batches,
        schema=RAW_RECORD_SCHEMA,
        window_start=window.start if window else None,
        window_end=window.end if window else None,
        version=started.isoformat(),
        origin={"started_at": started.isoformat()},
        late_fields=lambda: {
            "requests": int(extractor.request_stats().get("requests", 0)) - before
        },
    )
    return manifest


def payloads(raw: pa.Table) -> list[dict[str, Any]]:
    """The landed payloads of a partition, parsed."""
    return [json.loads(text) for text in raw.column("payload").to_pylist()]


def resume_day(landing: Landing, source: str, entities: list[str], start_date: date) -> date:
    """The first day the next windowed run must cover: the last day landed for every entity
    (re-landed, it may have been partial), or `start_date` if an entity never landed. After a
    freeze this is the stored watermark, so unfreezing leaves no gap."""
    last_days = []
    for entity in entities:
        days = [m.partition_key for m in landing.manifests(source, entity)]
        if not days:
            return start_date
        last_days.append(date.fromisoformat(max(days)))
    return min(last_days, default=start_date)


@dataclass(frozen=True)
class EntitySpec:
    """What the Dagster factory needs to know about an entity without calling the API."""

    name: str
    snapshot: bool = False
    description: str = ""


class ApiConnector(Protocol):
    """Implemented once per API source type (connectors/<type>/)."""

    source_type: str
    entities: tuple[EntitySpec, ...]

    def open(self, source: Any) -> Any:
        """A context manager yielding {entity name: EntityExtractor}, sharing one client.

        Reads the source's secrets from the environment only now, at run time."""
        ...


FLUSH_RECORDS = 5_000
# Day files open at once in a pass: each holds its last row group (up to a flush's worth of
# the day) until closed. Twice the days paged concurrently (one per time slice or facility,
# max_concurrency <= 4 by default); a late record for a closed day reopens it.
MAX_OPEN_DAYS = 8


def land_days(
    landing: Landing,
    source: str,
    extractor: EntityExtractor,
    days: list[date],
    timezone: str,
    lookback_days: int,
    max_open_days: int = MAX_OPEN_DAYS,
) -> list[Manifest]:
    """Extract days[0]-lookback .. days[-1] in ONE paging pass and land one partition per day.

    A back-fill of a year costs about N/page-size requests instead of a pass per day. Each
    record lands in the partition of its source-local modification day (look-back records
    go to the first day). Records stream to per-day Parquet writers, flushed every
    FLUSH_RECORDS, with at most `max_open_days` files open, so memory stays bounded by a few
    pages and those files however long the range. Nothing is committed until paging
    completes: a failure leaves every day as it was.
    """
    tz = ZoneInfo(timezone)
    first, last = days[0], days[-1]
    window = Window(
        day_window(first, timezone, lookback_days).start, day_window(last, timezone).end
    )
    before = int(extractor.request_stats().get("requests", 0))
    started = datetime.now(UTC)
    writers = {
        day: landing.open_partition(source, extractor.entity, day.isoformat()) for day in days
    }
    open_days = BoundedWriters(writers, max_open_days)
    # Buffered as JSON text, not dicts: a parsed order with its line items takes ~2.5x its
    # JSON size in Python objects (5,000 buffered orders: ~100 MB as dicts, ~40 MB as text).
    # Ordered by each day's latest record: a flush writes the days still being paged last,
    # so those are the ones that stay open.
    buffers: OrderedDict[date, list[Row]] = OrderedDict()

    def flush() -> None:
        for day, rows in buffers.items():
            open_days.write_batch(day, _rows_batch(rows))
        buffers.clear()

    buffered = 0
    try:
        for writer in writers.values():
            writer.start_data(RAW_RECORD_SCHEMA)
        for page in extractor.extract(window):
            for record in page:
                local = record.modified_at.astimezone(tz).date() if record.modified_at else first
                day = min(max(local, first), last)  # late edits land in the last day
                if day in buffers:
                    buffers.move_to_end(day)
                else:
                    buffers[day] = []
                buffers[day].append(_row(record))
                buffered += 1
                # Bound the total, not each day: a long back-fill has many small days.
                if buffered >= FLUSH_RECORDS:
                    flush()
                    buffered = 0
                    release_free_heap()  # the flushed texts' pages (aiq_sync/heap.py)
        flush()
        requests = int(extractor.request_stats().get("requests", 0)) - before
        fields = {
            "window_start": window.start,
            "window_end": window.end,
            "version": started.isoformat(),
            "origin": {"started_at": started.isoformat(), "days_in_pass": len(days)},
        }
        # One commit for the pass: two flushes to disk instead of two per day.
        return commit_all(
            [
                # The pass's requests are counted once, on the first day.
                (writers[day], {**fields, "requests": requests if day == first else 0})
                for day in days
            ]
        )
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise

"""Land a range of days of a SQL source: one ordered pass, one day partition open at a time.

Rows arrive in cursor order, so a day is complete as soon as the pass reaches the next day:
its partition is committed then and the next one opened. Memory holds one server-side
batch and one open Parquet writer, whatever the range (a year back-fill of a million lines
included); the generic `aiq_sync.extract.land_days` keeps up to 8 days open and commits them
all at the end (API pages are not ordered by day). A failure mid-pass leaves the days
already committed (complete: every later row has a later cursor) and the rest as they were.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from aiq_sync.config import SqlSource
from aiq_sync.extract import Window, day_window
from aiq_sync.landing import Landing, Manifest, PartitionWriter
from connectors.file_drop.reader import RAW_SCHEMA
from connectors.sql.database import Database, SqlSourceError
from connectors.sql.extract import ENTITY, SqlLinesExtractor


@contextmanager
def open_extractors(
    source: SqlSource, timezone: str, environ: Mapping[str, str] | None = None
) -> Iterator[dict[str, SqlLinesExtractor]]:
    """One extractor per configured entity, sharing one engine; the URL is read now."""
    db = Database(source, os.environ if environ is None else environ)
    try:
        yield {
            name: SqlLinesExtractor(source, spec, db, timezone)
            for name, spec in source.entities.items()
        }
    finally:
        db.close()


def land_sql_days(
    landing: Landing,
    source: str,
    extractor: SqlLinesExtractor,
    days: list[date],
    timezone: str,
    lookback_days: int,
) -> list[Manifest]:
    """Extract days[0]-lookback .. days[-1] and land one partition per local day (look-back
    rows go to the first day, as with API sources); every day gets a partition, empty or not."""
    first, last = days[0], days[-1]
    window = Window(
        day_window(first, timezone, lookback_days).start, day_window(last, timezone).end
    )
    started = datetime.now(UTC)
    before = int(extractor.request_stats()["requests"])
    manifests: list[Manifest] = []
    current = first
    writer = _open(landing, source, current)

    def commit(part: PartitionWriter) -> None:
        # The pass's queries (all sent before the first day completes) count on its first day.
        requests = 0 if manifests else int(extractor.request_stats()["requests"]) - before
        manifests.append(
            part.commit(
                window_start=window.start,
                window_end=window.end,
                version=started.isoformat(),
                origin={**extractor.origin, "started_at": started.isoformat()},
                requests=requests,
            )
        )

    try:
        for batch, row_days in extractor.batches(window):
            start = 0
            while start < len(row_days):
                # Clamp: look-back rows belong to the first day; a row out of order (never
                # with a well-typed cursor) joins the open day rather than a committed one.
                day = min(max(row_days[start], current), last)
                end = start + 1
                while end < len(row_days) and min(max(row_days[end], current), last) == day:
                    end += 1
                while current < day:
                    commit(writer)
                    current += timedelta(days=1)
                    writer = _open(landing, source, current)
                writer.write_batch(batch.slice(start, end - start))
                start = end
        while True:
            commit(writer)
            if current >= last:
                break
            current += timedelta(days=1)
            writer = _open(landing, source, current)
    except BaseException:
        writer.abort()
        raise
    return manifests


def _open(landing: Landing, source: str, day: date) -> PartitionWriter:
    writer = landing.open_partition(source, ENTITY, day.isoformat())
    writer.start_data(RAW_SCHEMA)
    return writer


def check(source: SqlSource, timezone: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems found by connecting and reading one row per entity (for `aiq-sync check`):
    an unset or malformed URL, an unreachable server, wrong credentials, a missing table or
    column, a cursor that is not a time. A frozen source is not contacted."""
    if source.freeze:
        return []
    try:
        with open_extractors(source, timezone, environ) as extractors:
            problems: list[str] = []
            for name, extractor in extractors.items():
                try:
                    with extractor.db.connect() as conn:
                        extractor.probe(conn)
                except SqlSourceError as exc:
                    problems.append(str(exc))
                except Exception as exc:  # a driver error, described without secrets
                    problems.append(str(extractor.db.error(exc, f"entities.{name}")))
            return problems
    except SqlSourceError as exc:
        return [str(exc)]

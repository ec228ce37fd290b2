"""Range paging (`range=[start,end]` until an empty page) and concurrent listings.

Stops: an empty page ends a listing normally. A page that repeats an earlier one is asked
for again (a glitch passes); if it keeps repeating, the listing fails rather than land a
window with rows missing, unless the page held more rows than asked for: then the server
ignores `range` and has already sent everything, so the listing stops there. Either stop is
logged and counted in the request stats so it shows in the asset metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiq_sync.http import ApiClient, ApiError
from connectors.webjoint import api

log = logging.getLogger("connectors.webjoint")
T = TypeVar("T")

# 20k pages of 100 = 2M rows for one facility in one pass: far above a year of a busy store.
MAX_PAGES = 20_000
REPEAT_RETRIES = 2  # asks again for a page that repeated an earlier one


@dataclass
class PagingStats:
    """Counters of what paging and filtering did, for metadata (thread-safe)."""

    pages: int = 0
    rows_listed: int = 0
    rows_kept: int = 0
    rows_outside_window: int = 0
    duplicates_dropped: int = 0
    repeated_page_stops: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def stopped(self, what: str) -> None:
        with self._lock:
            self.repeated_page_stops.append(what)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pages": self.pages,
                "rows_listed": self.rows_listed,
                "rows_kept": self.rows_kept,
                "rows_outside_window": self.rows_outside_window,
                "duplicates_dropped": self.duplicates_dropped,
                "repeated_page_stops": list(self.repeated_page_stops),
            }


def _fingerprint(rows: list[dict[str, Any]]) -> str:
    ids = [r.get("id") for r in rows]
    basis: Any = ids if all(i is not None for i in ids) else rows
    return hashlib.sha1(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()


def pages(
    client: ApiClient,
    path: str,
    params: Mapping[str, Any],
    *,
    label: str,
    stats: PagingStats,
    page_size: int = api.PAGE_SIZE,
) -> Iterator[list[dict[str, Any]]]:
    """Every page of one listing, in order, until an empty page (or a repeated one)."""
    seen: dict[str, int] = {}
    start = 0
    for number in range(MAX_PAGES):
        query = {**params, api.RANGE_PARAM: api.range_value(start, page_size)}
        for attempt in range(REPEAT_RETRIES + 1):
            rows, endpoint = _page(client, path, query, label, stats)
            mark = _fingerprint(rows) if rows else None
            if mark is None or mark not in seen:
                break
            what = (
                f"{label}: page {api.range_value(start, page_size)} repeats page "
                f"{api.range_value(seen[mark] * page_size, page_size)}"
            )
            if len(rows) > page_size:  # range ignored: that page was the whole listing
                log.warning("webjoint %s; the server ignores range, stopped paging", what)
                stats.stopped(what)
                return
            log.warning("webjoint %s (attempt %d); asking again", what, attempt + 1)
        else:
            stats.stopped(what)
            raise ApiError(
                f"GET {endpoint}: {what} after {REPEAT_RETRIES} retries; nothing landed for "
                "this window, so no rows go missing",
                kind="malformed",
                method="GET",
                endpoint=endpoint,
            )
        if not rows:
            return
        seen[mark] = number
        stats.add(rows_listed=len(rows))
        yield rows
        start += page_size
    raise ApiError(
        f"GET {path}: {label} did not end after {MAX_PAGES} pages; giving up",
        kind="client_error",
        method="GET",
        endpoint=path,
    )


def _page(
    client: ApiClient, path: str, query: dict[str, Any], label: str, stats: PagingStats
) -> tuple[list[dict[str, Any]], str]:
    response = client.get_json(path, query)
    rows = api.rows_of(response.json)
    if rows is None:
        raise ApiError(
            f"GET {response.endpoint}: expected a JSON array of rows for {label}, got "
            f"{type(response.json).__name__}",
            kind="malformed",
            method="GET",
            endpoint=response.endpoint,
            status=response.status,
        )
    stats.add(pages=1)
    return rows, response.endpoint


_DONE = object()


def interleave(
    producers: Sequence[Callable[[], Iterator[T]]], max_concurrency: int, buffer: int = 8
) -> Iterator[T]:
    """Items of several iterators (one per facility), run on up to `max_concurrency` threads.

    Memory is bounded by `buffer` items; the first error stops the others and is re-raised;
    closing the generator early stops every producer.
    """
    if max_concurrency <= 1 or len(producers) <= 1:
        for produce in producers:
            yield from produce()
        return
    out: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=buffer)
    stop = threading.Event()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run(produce: Callable[[], Iterator[T]]) -> None:
        try:
            if stop.is_set():
                return
            for item in produce():
                if not put((item, None)):
                    return
        except BaseException as exc:
            put((None, exc))
        finally:
            put((_DONE, None))

    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="webjoint")
    for produce in producers:
        pool.submit(run, produce)
    done = 0
    try:
        while done < len(producers):
            item, error = out.get()
            if error is not None:
                raise error
            if item is _DONE:
                done += 1
                continue
            yield item
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)

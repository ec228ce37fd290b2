"""The floor: every page a full `aiq-sync run` fetches, fetched the same way, JSON-parsed and
dropped (no landing, no warehouse).

It drives the connectors' own extractors (same endpoints, parameters, page size, slicing,
concurrency, pacing and retries, over the same `ApiClient`), so it cannot drift from the sync.
Where an extractor does more than fetch (Webjoint's de-duplication spools every row to disk
and hashes it), the floor takes the fetching part only: the listing pages.

    python -m aiq_sync.bench.floor --config CONFIG --out floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiq_sync.config import AppConfig, load_config
from aiq_sync.extract import Window, day_window


def full_window(config: AppConfig, source: Any) -> Window:
    """The window of a first run on an empty landing (assets/runner.py + extract.land_days):
    start_date minus the look-back, through the end of today, source-local."""
    tz = config.source_timezone(source)
    today = datetime.now(ZoneInfo(tz)).date()
    first = day_window(source.start_date, tz, source.lookback_days)
    return Window(first.start, day_window(today, tz).end)


def _count_bc_items(order: dict[str, Any]) -> int:
    if "_line_items" in order:
        return len(order["_line_items"])
    consignments = order.get("consignments") or {}
    email = consignments.get("email") or {}
    groups = [
        *(consignments.get("pickups") or ()),
        *(consignments.get("shipping") or ()),
        *(consignments.get("downloads") or ()),
        *(email.get("gift_certificates") or ()),
    ]
    return sum(len(g.get("line_items") or ()) for g in groups)


class _Tally:
    """Distinct ids per entity and line items of the distinct orders (Webjoint repeats rows)."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = {}
        self.items: dict[str, int] = {}
        self.records = 0

    def add(self, entity: str, rows: list[dict[str, Any]], items: Any = None) -> None:
        seen = self.ids.setdefault(entity, set())
        for row in rows:
            self.records += 1
            rid = str(row.get("id"))
            if rid in seen:
                continue
            seen.add(rid)
            if items is not None:
                self.items[entity] = self.items.get(entity, 0) + items(row)


def _bigcommerce(config: AppConfig, source: Any, tally: _Tally) -> int:
    from connectors.bigcommerce.extract import BigCommerceConnector

    window = full_window(config, source)
    with BigCommerceConnector().open(source) as extractors:
        for name, extractor in extractors.items():
            for page in extractor.extract(None if extractor.snapshot else window):
                rows = [r.payload for r in page]
                tally.add(name, rows, _count_bc_items if name == "orders" else None)
        return int(next(iter(extractors.values())).request_stats().get("requests", 0))


def _webjoint(config: AppConfig, source: Any, tally: _Tally) -> int:
    from connectors.webjoint.extract import WebjointConnector

    window = full_window(config, source)
    with WebjointConnector().open(source) as extractors:
        for name, extractor in extractors.items():
            pages: Iterator[list[Any]]
            if extractor.snapshot:
                pages = ([r.payload for r in page] for page in extractor.extract(None))
            else:
                pages = extractor._pages(window)  # the listing only, without the dedup spool
            for rows in pages:
                tally.add(
                    name,
                    rows,
                    (lambda o: len(o.get("details") or ())) if name == "orders" else None,
                )
        return int(next(iter(extractors.values())).request_stats().get("requests", 0))


FETCHERS = {"bigcommerce": _bigcommerce, "webjoint": _webjoint}


def run_floor(config: AppConfig) -> dict[str, Any]:
    """Fetch everything a first run fetches; rows are distinct ids per source and entity."""
    result: dict[str, Any] = {"requests": 0, "sources": {}}
    for source in config.sources:
        fetch = FETCHERS.get(source.source_type)
        if fetch is None:
            continue
        tally = _Tally()
        requests = fetch(config, source, tally)
        result["requests"] += requests
        result["sources"][source.name] = {
            "requests": requests,
            "records_fetched": tally.records,
            "orders": len(tally.ids.get("orders", ())),
            "items": tally.items.get("orders", 0),
            "customers": len(tally.ids.get("customers", ())),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiq_sync.bench.floor")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = run_floor(load_config(args.config))
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The generic API extraction layer: windows, one-pass back-fills, atomic per-day landing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aiq_sync.extract import (
    RawRecord,
    Window,
    day_window,
    land_days,
    payload_text,
    resume_day,
)
from aiq_sync.landing import Landing

LA = "America/Los_Angeles"


class ListExtractor:
    """An in-memory stand-in for an API's paging, counting one request per page."""

    entity = "orders"
    snapshot = False

    def __init__(self, records: list[RawRecord], page_size: int = 2, fail_after: int | None = None):
        self.records, self.page_size, self.fail_after = records, page_size, fail_after
        self.requests = 0
        self.windows: list[Window] = []

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        assert window is not None
        self.windows.append(window)
        inside = [r for r in self.records if r.modified_at and window.contains(r.modified_at)]
        for i in range(0, len(inside), self.page_size):
            if self.fail_after is not None and self.requests >= self.fail_after:
                raise ConnectionError("simulated outage mid-paging")
            self.requests += 1
            yield inside[i : i + self.page_size]

    def request_stats(self) -> dict[str, Any]:
        return {"requests": self.requests}


def record(n: int, local: str) -> RawRecord:
    moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(LA)).astimezone(UTC)
    return RawRecord(str(n), moment, {"id": n})


def test_day_window_is_the_local_day_in_utc_across_dst() -> None:
    normal = day_window(date(2026, 9, 5), LA)
    assert normal.start == datetime(2026, 9, 5, 7, tzinfo=UTC)
    assert normal.end - normal.start == timedelta(hours=24)
    fall_back = day_window(date(2026, 11, 1), LA)
    assert fall_back.end - fall_back.start == timedelta(hours=25)
    with_lookback = day_window(date(2026, 9, 5), LA, lookback_days=2)
    assert with_lookback.start == datetime(2026, 9, 3, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_a_range_is_extracted_in_one_pass_and_landed_per_local_day(tmp_path: Path) -> None:
    records = [
        record(1, "2026-09-04T23:00"),  # look-back day: goes to the first day
        record(2, "2026-09-05T00:30"),
        record(3, "2026-09-05T23:59"),
        record(4, "2026-09-06T12:00"),
        record(5, "2026-09-07T12:00"),  # after the range: not requested at all
    ]
    extractor = ListExtractor(records)
    landing = Landing(tmp_path)
    days = [date(2026, 9, 5), date(2026, 9, 6)]
    manifests = land_days(landing, "bc", extractor, days, LA, lookback_days=1)
    assert len(extractor.windows) == 1
    assert [m.partition_key for m in manifests] == ["2026-09-05", "2026-09-06"]
    ids = {m.partition_key: landing.read(m).column("id").to_pylist() for m in manifests}
    assert ids == {"2026-09-05": ["1", "2", "3"], "2026-09-06": ["4"]}
    assert [m.requests for m in manifests] == [2, 0]  # the pass's requests, counted once


def test_a_failure_mid_paging_leaves_every_day_as_it_was(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    days = [date(2026, 9, 5), date(2026, 9, 6)]
    records = [record(i, f"2026-09-0{5 + i % 2}T1{i % 10}:00") for i in range(10)]
    good = land_days(landing, "bc", ListExtractor(records[:4]), days, LA, 0)
    with pytest.raises(ConnectionError):
        land_days(landing, "bc", ListExtractor(records, fail_after=2), days, LA, 0)
    for before in good:
        after = landing.manifest("bc", "orders", before.partition_key)
        assert after is not None and after.manifest_id == before.manifest_id
        assert landing.read(after).num_rows == before.rows
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


def test_resume_day_is_the_last_landed_day_of_the_slowest_entity(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    start = date(2024, 1, 1)
    assert resume_day(landing, "bc", ["orders"], start) == start
    land_days(landing, "bc", ListExtractor([]), [date(2026, 9, 5), date(2026, 9, 6)], LA, 0)
    assert resume_day(landing, "bc", ["orders"], start) == date(2026, 9, 6)
    assert resume_day(landing, "bc", ["orders", "customers"], start) == start


class WatchedExtractor(ListExtractor):
    """Pages in the list's own order (not sorted) and records the open data files per page."""

    def __init__(self, records: list[RawRecord], landing: Landing, page_size: int):
        super().__init__(records, page_size)
        self.landing = landing
        self.open_seen: list[int] = []

    def extract(self, window: Window | None) -> Iterator[list[RawRecord]]:
        for page in super().extract(window):
            self.open_seen.append(self.landing.open_files.now)
            yield page


def test_a_long_back_fill_keeps_few_day_files_open_and_late_records_reopen_their_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aiq_sync.extract.FLUSH_RECORDS", 10)  # many flushes in a small pass
    days = [date(2025, 1, 1) + timedelta(days=i) for i in range(400)]
    expected: dict[str, str] = {}  # record id -> its day
    records: list[RawRecord] = []
    for i, day in enumerate(days):
        for hour in (1, 9, 17):
            records.append(record(len(records), f"{day}T{hour:02}:00"))
            expected[records[-1].id] = day.isoformat()
        if i % 50 == 49:  # a late record for a day long since flushed and closed
            old = days[i - 40]
            records.append(record(len(records), f"{old}T12:00"))
            expected[records[-1].id] = old.isoformat()
    landing = Landing(tmp_path)
    extractor = WatchedExtractor(records, landing, page_size=7)
    manifests = land_days(landing, "bc", extractor, days, LA, 0, max_open_days=4)

    assert max(extractor.open_seen) <= 4 and landing.open_files.peak == 4
    assert landing.open_files.now == 0
    landed = {
        m.partition_key: landing.read(m).column("id").to_pylist() for m in manifests if m.rows
    }
    assert sorted(i for ids in landed.values() for i in ids) == sorted(expected)  # once each
    assert {i: day for day, ids in landed.items() for i in ids} == expected
    assert all(m.rows == len(landed.get(m.partition_key, [])) for m in manifests)
    late_day = landing.partition_dir("bc", "orders", days[9].isoformat())
    assert len(landed[days[9].isoformat()]) == 4  # 3 in order + 1 late, merged in one file
    assert sorted(p.name for p in late_day.iterdir()) == sorted(
        ["_manifest.json", manifests[9].data_file]
    )

    # A failure after many days were closed (and one reopened) leaves the pass as it was.
    failing = ListExtractor(records, page_size=7, fail_after=150)
    with pytest.raises(ConnectionError):
        land_days(landing, "bc", failing, days, LA, 0, max_open_days=4)
    for before in manifests:
        after = landing.manifest("bc", "orders", before.partition_key)
        assert after is not None and after.manifest_id == before.manifest_id
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []


@pytest.mark.parametrize(
    "payload",
    [
        {"id": 1, "total": "361.9500", "name": "Jos\u00e9 \u2603", "items": [{"q": 2.5}]},
        {"id": 2**70, "note": None},  # beyond 64 bits: the json fallback
        {1: "int keys become strings", "nested": {"a": [True, False]}},
    ],
)
def test_landed_payload_text_parses_back_to_the_payload(payload: dict) -> None:
    text = payload_text(payload)
    assert json.loads(text) == json.loads(json.dumps(payload))

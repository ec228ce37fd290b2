"""Request shape and parsing, replayed from vcrpy cassettes (no network, no server).

The cassettes in tests/cassettes/webjoint/ were recorded against the sandbox, which follows the
reconstructed API of connectors/webjoint/api.py. When the vendor's API is reachable, record
real ones (same connector, real key in the environment) with `WEBJOINT_RECORD=1`: the API key
header is filtered before anything is written, and the tests below check that no secret is in
any cassette.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import vcr

from aiq_sync.config import AppConfig, parse_config
from aiq_sync.extract import day_window, land_days, land_entity
from aiq_sync.http import ApiError
from aiq_sync.landing import Landing
from aiq_sync.sandbox.webjoint import WebjointSandbox
from connectors.webjoint import WebjointConnector, api

CASSETTES = Path(__file__).parent / "cassettes" / "webjoint"
RECORD_KEY = "wj-cassette-SECRET-0b7d2e91"
ENV = "WJ_CASSETTE_KEY"
NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
DAYS = [date(2025, 3, 12), date(2025, 3, 13)]
LA = "America/Los_Angeles"
REPLAY_URL = "http://webjoint.cassette/prod/api/"
CONNECTOR = WebjointConnector(requests_per_second=1_000, burst=20)


def cassette(name: str, mode: str) -> Any:
    if mode == "all":
        (CASSETTES / name).unlink(missing_ok=True)  # re-record from scratch, no leftovers
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        filter_headers=[(api.AUTH_HEADER, "REDACTED")],
        match_on=("method", "path", "query"),  # not the host: replays need no server
        record_mode=mode,
        decode_compressed_response=True,
    )
    return recorder.use_cassette(name)


@pytest.fixture
def cassette_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(base URL, record mode): replay by default; record from a sandbox when asked to or
    when a cassette is missing."""
    monkeypatch.setenv(ENV, RECORD_KEY)
    missing = not all((CASSETTES / n).exists() for n in ("window_pull.yaml", "unauthorized.yaml"))
    if os.environ.get("WEBJOINT_RECORD") or missing:
        with WebjointSandbox(
            orders=150, customers=1500, products=10, history_days=10, now=NOW,
            api_key=RECORD_KEY, rate=None, seed=11,
        ) as sb:  # fmt: skip
            yield sb.base_url, "all"
    else:
        yield REPLAY_URL, "none"


def _config(tmp_path: Path, base_url: str) -> AppConfig:
    return parse_config(
        {
            "warehouse": str(tmp_path / "w.duckdb"),
            "landing": str(tmp_path / "landing"),
            "schedule": {"timezone": LA},
            "sources": [
                {"name": "wj", "type": "webjoint", "api_key_env": ENV, "company_id": 7,
                 "base_url": base_url, "max_concurrency": 1},
            ],
        },
        base_dir=tmp_path,
    )  # fmt: skip


def _query(uri: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(uri).query).items()}


def test_a_window_pull_sends_the_assumed_requests_and_parses_the_answers(
    tmp_path: Path, cassette_env: tuple[str, str]
) -> None:
    base_url, mode = cassette_env
    cfg = _config(tmp_path, base_url)
    landing = Landing(cfg.landing_path)
    with (
        cassette("window_pull.yaml", mode) as recorded,
        CONNECTOR.open(cfg.source("wj")) as extractors,
    ):
        orders = land_days(landing, "wj", extractors["orders"], DAYS, LA, 1)
        customers = land_days(landing, "wj", extractors["customers"], DAYS, LA, 1)
        facilities = land_entity(landing, "wj", extractors["facilities"], "s", None)
        inventory = land_entity(landing, "wj", extractors["inventory"], "s", None)
        stats = extractors["orders"].request_stats()
        requests = list(recorded.requests)
        if mode == "none":
            assert recorded.all_played

    # Request shape: endpoints, company, facility, range paging, date filter, headers.
    endpoints = [urlsplit(r.uri).path.removeprefix("/prod/api/") for r in requests]
    assert set(endpoints) == {"facilities", "orders", "customers", "products", "packages"}
    assert endpoints.count("facilities") == 2  # one page, then the empty page that ends it
    window = day_window(DAYS[0], LA, 1)
    for request, endpoint in zip(requests, endpoints, strict=True):
        query = _query(request.uri)
        assert request.method == "GET"
        assert query["companyId"] == "7"
        start, end = map(int, re.fullmatch(r"\[(\d+),(\d+)\]", query["range"]).groups())
        assert start % 100 == 0 and end - start == 99
        assert request.headers[api.AUTH_HEADER] == "REDACTED"
        assert request.headers["Accept"] == "application/json"
        if endpoint in ("orders", "products", "packages"):
            assert query["facilityId"] in {"51", "52", "53"}
        if endpoint in ("orders", "customers"):
            assert query["dateFrom"] == window.start.date().isoformat() == "2025-03-11"
            assert query["dateTo"] == "2025-03-14"  # the UTC day the window's last moment is in
        else:
            assert "dateFrom" not in query
    # Parsing: rows inside the window only, newest versions, one landed partition per day.
    assert stats["facilities"] == ["51", "52", "53"]
    assert [m.partition_key for m in orders] == ["2025-03-12", "2025-03-13"]
    assert sum(m.rows for m in orders) > 0 and sum(m.rows for m in customers) > 0
    for manifest in orders:
        for moment in landing.read(manifest).column("modified_at").to_pylist():
            assert window.start <= moment < day_window(DAYS[-1], LA).end
    assert facilities.rows == 3 and inventory.rows > 0


def test_a_rejected_key_is_an_auth_error_that_names_no_secret(
    tmp_path: Path, cassette_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, mode = cassette_env
    cfg = _config(tmp_path, base_url)
    monkeypatch.setenv(ENV, RECORD_KEY + "-revoked")
    with (
        cassette("unauthorized.yaml", mode),
        CONNECTOR.open(cfg.source("wj")) as extractors,
        pytest.raises(ApiError) as caught,
    ):
        list(extractors["orders"].extract(day_window(DAYS[0], LA)))
    assert caught.value.kind == "auth" and caught.value.status == 401
    assert str(caught.value).startswith("GET facilities: 401 Unauthorized")
    assert RECORD_KEY not in str(caught.value) and RECORD_KEY not in repr(caught.value.__dict__)


def test_no_secret_in_any_cassette() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert {f.name for f in files} >= {"window_pull.yaml", "unauthorized.yaml"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert RECORD_KEY not in text, path.name
        values: list[Any] = re.findall(rf"{api.AUTH_HEADER}:\s*\n\s*- (\S+)", text, re.I)
        assert values and set(values) == {"REDACTED"}, path.name

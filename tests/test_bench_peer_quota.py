"""The benchmark's dlt peer and quota run (issue #6) against real sandboxes over loopback, and
the quota limiter's handling of answers that arrive after their window ended. No timing is
asserted here (speed is the benchmark's business); counts and correctness are."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from aiq_sync.bench.quota import run_quota
from aiq_sync.http import HeaderQuotaRateLimiter
from aiq_sync.sandbox.bigcommerce import BigCommerceSandbox


def _answer(left: int, reset_ms: int, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        headers={
            "X-Rate-Limit-Time-Window-Ms": "30000",
            "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
            "X-Rate-Limit-Requests-Quota": "150",
            "X-Rate-Limit-Requests-Left": str(left),
        },
    )


def test_a_late_answer_from_the_last_window_does_not_cap_the_new_one() -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = HeaderQuotaRateLimiter(clock=lambda: now[0], sleep=sleep)
    limiter.acquire()
    limiter.release(_answer(left=60, reset_ms=1_000))  # window 1 ends at 101
    limiter.acquire()  # a slow page, sent in window 1 ...
    now[0] = 101.2
    fresh = limiter.acquire()  # window 2: the full quota again
    limiter.release(_answer(left=149, reset_ms=29_900))
    assert fresh == 0.0
    # ... answered now: the server counted it in window 1, with 5 left and 1 ms to go.
    limiter.release(_answer(left=5, reset_ms=1))
    waits = [limiter.acquire() for _ in range(140)]
    assert waits == [0.0] * 140 and sleeps == []
    # The window's real budget still binds: 149 - 140 = 9 more, then a wait for the reset.
    assert [limiter.acquire() for _ in range(9)] == [0.0] * 9
    assert limiter.acquire() > 29.0


def test_the_fastest_answer_of_a_window_sets_its_reset() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = HeaderQuotaRateLimiter(clock=lambda: now[0], sleep=sleep)
    limiter.acquire()
    now[0] = 2.0  # a slow answer: the server said 29 s left when it answered at ~1 s
    limiter.release(_answer(left=148, reset_ms=29_000))
    limiter.acquire()
    now[0] = 2.1  # a fast one: 27.9 s left at 2.1 s, so the window ends by 30.0, not 31.0
    limiter.release(_answer(left=147, reset_ms=27_900))
    for _ in range(147):
        limiter.acquire()
    assert sleeps == []
    waited = limiter.acquire()
    assert 27.9 < waited < 28.0  # until 30.0 plus the small margin


def test_the_quota_run_lands_every_order_without_a_429(tmp_path: Path) -> None:
    """Scaled down: 3 requests per 2 s window, so the run spans several windows."""
    result = run_quota(3_000, tmp_path, time_scale=1 / 15, quota=3)
    pages = math.ceil(3_000 / 250)
    assert result["orders_landed"] == result["orders_truth"] == 3_000
    assert result["http_429"] == 0 and result["failed_requests"] == 0
    assert pages < result["requests"] <= pages + 3  # + the count and the server time
    assert result["per_order_design_requests"] == pages + 3_000
    assert result["quota_floor_s"] == (math.ceil(result["requests"] / 3) - 1) * 2.0
    assert all(w["requests"] <= 3 for w in result["windows"])


def test_the_dlt_peer_loads_what_the_sandbox_holds(tmp_path: Path) -> None:
    pytest.importorskip("dlt", reason="the peer needs `pip install -e '.[peer]'`")
    from aiq_sync.bench.peer_dlt import run_peer

    with BigCommerceSandbox(orders=600, customers=260, token="peer-token", quota=10**6) as sb:
        result = run_peer(
            sb.api_path,
            "peer-token",
            tmp_path,
            requests_counter=lambda: sb.counters()["requests_total"],
        )
        by_endpoint = sb.counters()["by_endpoint"]
    holdings = sb.holdings()
    assert result["rows"] == {k: holdings[k] for k in ("orders", "items", "customers")}
    assert result["rows_match"] is True
    # 3 order pages + the 204 that ends paging; 2 customer pages (total_pages says so).
    assert by_endpoint == {"GET /v2/orders": 4, "GET /v3/customers": 2}
    assert result["requests"] == 6
    assert result["peak_rss_mb"] > 0 and result["dlt_version"].startswith("1.")
    assert "peer-token" not in (tmp_path / "peer-dlt.log").read_text()

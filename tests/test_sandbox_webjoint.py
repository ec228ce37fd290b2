"""The Webjoint sandbox: auth and errors, range paging, the loose date filter with exact and
stale duplicates, determinism, facilities added between runs, rate limiting, chaos, CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from aiq_sync.sandbox.webjoint import Chaos, Fault, WebjointSandbox

KEY = "wj-sandbox-test-key"
NOW = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)


@contextmanager
def fresh(**kwargs: Any) -> Iterator[tuple[WebjointSandbox, httpx.Client]]:
    options: dict[str, Any] = {"orders": 600, "customers": 200, "products": 30, "now": NOW}
    options |= {"api_key": KEY, "rate": None, "history_days": 20}
    options.update(kwargs)
    with (
        WebjointSandbox(**options) as sb,
        httpx.Client(base_url=sb.base_url, headers={"x-api-key": KEY}) as client,
    ):
        yield sb, client


def listing(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of one pass: pages of 100 until an empty page."""
    rows, start = [], 0
    while True:
        page = client.get(
            path, params={"companyId": 7, **params, "range": f"[{start},{start + 99}]"}
        )
        assert page.status_code == 200, page.text
        if not page.json():
            return rows
        rows += page.json()
        start += 100


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_auth_and_request_errors() -> None:
    with fresh() as (_, c):
        for headers in ({"x-api-key": "wrong"}, {"x-api-key": ""}):
            r = c.get("facilities", params={"companyId": 7}, headers=headers)
            assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
            assert "wrong" not in r.text
        assert c.get("facilities").status_code == 400  # companyId is required
        assert c.get("facilities", params={"companyId": 8}).status_code == 403
        assert c.get("nope", params={"companyId": 7}).status_code == 404
        assert c.get("orders", params={"companyId": 7}).status_code == 400  # facilityId
        r = c.get("orders", params={"companyId": 7, "facilityId": 99})
        assert r.status_code == 404
        bad = {"companyId": 7, "facilityId": 51}
        assert c.get("orders", params={**bad, "range": "0-99"}).status_code == 400
        assert c.get("orders", params={**bad, "range": "[9,3]"}).status_code == 400
        assert c.get("orders", params={**bad, "dateFrom": "03/01/2025"}).status_code == 400


def test_facilities_rooms_products_packages() -> None:
    with fresh() as (sb, c):
        facilities = listing(c, "facilities")
        assert [f["id"] for f in facilities] == sb.facility_ids == [51, 52, 53]
        assert all(f["companyId"] == 7 and f["timezone"] for f in facilities)
        products = listing(c, "products", facilityId=51)
        assert products and all(p["variant"] for p in products)
        variant_ids = {v["productId"] for p in products for v in p["variant"]}
        packages = listing(c, "packages", facilityId=51)
        assert packages
        # Stock per room; a few packages of products the facility does not list.
        assert all(q["locationId"] // 100 == 51 for p in packages for q in p["packageQuantities"])
        listed = [p for p in packages if p["productId"] in variant_ids]
        assert len(listed) >= 0.9 * len(packages)
        assert all(p["costPerItem"] > 0 for p in packages)


def test_range_paging_ends_with_an_empty_page() -> None:
    with fresh(duplicate_share=0, stale_share=0) as (_, c):
        rows = listing(c, "orders", facilityId=51)
        assert len(rows) == 200 == len({r["id"] for r in rows})  # 600 orders / 3 facilities
        q = {"companyId": 7, "facilityId": 51}
        assert c.get("orders", params={**q, "range": "[200,299]"}).json() == []
        assert len(c.get("orders", params=q).json()) == 100  # no range: 100 rows
        assert len(c.get("orders", params={**q, "range": "[0,999]"}).json()) == 200
        short = c.get("orders", params={**q, "range": "[150,159]"}).json()
        assert [r["id"] for r in short] == [r["id"] for r in rows[150:160]]


def test_loose_date_filter_returns_older_rows() -> None:
    with fresh(duplicate_share=0, stale_share=0, loose_days=2) as (sb, c):
        day = (NOW - dt.timedelta(days=5)).date()
        rows = listing(c, "orders", facilityId=52, dateFrom=str(day), dateTo=str(day))
        updated = [_ts(r["dateUpdated"]).date() for r in rows]
        assert max(updated) == day
        assert min(updated) == day - dt.timedelta(days=2)  # loose: two days before dateFrom
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        truth = sb.orders_in(52, start, start + dt.timedelta(days=1))
        inside = [r for r in rows if _ts(r["dateUpdated"]).date() == day]
        assert sorted(r["id"] for r in inside) == sorted(o["id"] for o in truth)


def test_duplicates_exact_and_stale_differ_by_pass() -> None:
    with fresh(orders=3000, duplicate_share=0.05, stale_share=0.05) as (sb, c):
        first = listing(c, "orders", facilityId=51)
        second = listing(c, "orders", facilityId=51)
        counters = sb.counters()
    ids = [r["id"] for r in first]
    assert len(set(ids)) == 1000 and len(ids) > 1000
    assert counters["duplicates_served"] > 0 and counters["stale_served"] > 0
    by_id: dict[int, list[dict[str, Any]]] = {}
    for row in first:
        by_id.setdefault(row["id"], []).append(row)
    stale = [rows for rows in by_id.values() if len({r["dateUpdated"] for r in rows}) > 1]
    assert stale
    for rows in stale:  # a stale copy is an older version: earlier update, earlier state
        newest = max(rows, key=lambda r: r["dateUpdated"])
        older = min(rows, key=lambda r: r["dateUpdated"])
        assert newest["status"] != older["status"]
    assert [r["id"] for r in second] != ids  # another pass, other duplicates
    assert set(r["id"] for r in second) == set(ids)
    # Malformed orders are never copied.
    bad = [r for r in first if r["total"] == "N/A" or "two" in json.dumps(r["details"])]
    assert len({r["id"] for r in bad}) == len(bad)


def test_refunds_returns_and_bad_records_exist() -> None:
    with fresh(orders=6000, duplicate_share=0, stale_share=0) as (_, c):
        rows = listing(c, "orders", facilityId=51)
    statuses = {r["status"] for r in rows}
    assert {"Complete", "Refunded", "Partially Refunded", "Cancelled"} <= statuses
    returns = [r for r in rows if r["orderType"] == "Return"]
    assert returns and all(r["total"] < 0 and r["originalOrderId"] for r in returns)
    refunded = [r for r in rows if r["status"] == "Refunded"]
    assert all(r["refundAmount"] == r["total"] for r in refunded)
    assert all(r["dateUpdated"] >= r["dateCompleted"] for r in refunded)
    assert any(r["total"] == "N/A" for r in rows)


def test_same_seed_same_bodies() -> None:
    with fresh(seed=7) as (_, a), fresh(seed=7) as (_, b), fresh(seed=8) as (_, c):
        for path, params in (("orders", {"facilityId": 52}), ("customers", {})):
            assert listing(a, path, **params) == listing(b, path, **params)
            assert listing(a, path, **params) != listing(c, path, **params)


def test_add_facility_between_runs() -> None:
    with fresh() as (sb, c):
        before = listing(c, "orders", facilityId=51)
        fid = sb.add_facility(name="Uptown")
        assert fid == 54 and sb.facility_ids == [51, 52, 53, 54]
        facilities = listing(c, "facilities")
        assert facilities[-1]["name"] == "Uptown"
        assert len(listing(c, "orders", facilityId=54)) >= 200
        assert listing(c, "products", facilityId=54)
        # The facilities that were there keep their data.
        assert [r["id"] for r in listing(c, "orders", facilityId=51)] != []
        assert {r["id"] for r in listing(c, "orders", facilityId=51)} == {r["id"] for r in before}


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("seconds", lambda v: v == "1"),
        ("fraction", lambda v: 0 < float(v) < 1),
        ("none", lambda v: v is None),
    ],
)
def test_rate_limit_429(mode: str, check: Any) -> None:
    with fresh(rate=5, burst=3, retry_after=mode) as (sb, c):
        codes = [c.get("facilities", params={"companyId": 7}) for _ in range(5)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
        assert codes[3].json() == {"message": "OVER LIMIT"}
        assert check(codes[3].headers.get("retry-after"))
        time.sleep(0.25)
        assert c.get("facilities", params={"companyId": 7}).status_code == 200
        assert sb.counters()["throttled_429"] == 2


def test_chaos_modes_produce_their_fault() -> None:
    chaos = Chaos(
        server_error=Fault(first=2, paths=("orders",)),
        throttle_without_headers=Fault(first=1, paths=("customers",)),
        slow=Fault(first=1, paths=("facilities",)),
        slow_seconds=0.3,
        truncated_json=Fault(first=1, paths=("products",)),
        html_200=Fault(first=1, paths=("packages",)),
        connection_reset=Fault(first=1, paths=("customers",)),
        repeat_page=Fault(first=1, paths=("orders",)),
    )
    with fresh(chaos=chaos, duplicate_share=0, stale_share=0) as (sb, c):
        q = {"companyId": 7, "facilityId": 51}
        assert [c.get("orders", params=q).status_code for _ in range(3)] == [500, 502, 200]
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            c.get("customers", params={"companyId": 7})
        r = c.get("customers", params={"companyId": 7})
        assert r.status_code == 429 and "retry-after" not in r.headers
        t0 = time.monotonic()
        assert c.get("facilities", params={"companyId": 7}).status_code == 200
        assert time.monotonic() - t0 >= 0.3
        with pytest.raises(json.JSONDecodeError):
            json.loads(c.get("products", params=q).content)
        r = c.get("packages", params=q)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        first = c.get("orders", params={**q, "range": "[0,99]"}).json()
        again = c.get("orders", params={**q, "range": "[100,199]"}).json()
        assert again == first  # the server ignored range once
        assert c.get("orders", params={**q, "range": "[100,199]"}).json() != first
        faults = sb.counters()["faults"]
    assert faults == {
        "server_error": 2,
        "throttle_without_headers": 1,
        "slow": 1,
        "truncated_json": 1,
        "html_200": 1,
        "connection_reset": 1,
        "repeat_page": 1,
    }


def test_chaos_parse_shorthand() -> None:
    chaos = Chaos.parse("server_error=0.05,repeat_page=2,slow_seconds=1.5")
    assert chaos.server_error == Fault(probability=0.05)
    assert chaos.repeat_page == Fault(first=2)
    assert chaos.slow_seconds == 1.5


def test_main_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiq_sync.sandbox.webjoint", "--port", "0", "--orders", "30",
         "--api-key", KEY, "--rate", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base_url = re.search(r"(http://\S+/prod/api/)", proc.stdout.readline()).group(1)
        assert "facilities: 51, 52, 53" in proc.stdout.readline()
        proc.send_signal(signal.SIGUSR1)  # opens one more facility
        assert "opened facility 54" in proc.stdout.readline()
        r = httpx.get(f"{base_url}facilities", params={"companyId": 7}, headers={"x-api-key": KEY})
        assert [f["id"] for f in r.json()] == [51, 52, 53, 54]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert '"requests_total": 1' in err

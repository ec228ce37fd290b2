"""BigCommerce connector end to end against the spec-faithful sandbox over loopback: every
order and line item lands exactly once in about N/250 requests, windows and look-back, rows
modified while paging, 204, the rate limit (no 429, close to the quota's minimum time),
retries and chaos, the >50-items fallback, `check`, contact sync, and the token never
leaking. Every request the connector sends is checked against the official specs."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet
import pytest

from aiq_sync import warehouse
from aiq_sync.canonical import NormaliseContext
from aiq_sync.config import BigCommerceSource, parse_config
from aiq_sync.extract import RAW_RECORD_SCHEMA, Window, land_days, land_entity
from aiq_sync.http import RetryPolicy
from aiq_sync.landing import Landing
from aiq_sync.loader import load_source
from aiq_sync.normalise import phone_e164
from aiq_sync.sandbox.bigcommerce import ALL_SCOPES, BigCommerceSandbox, Chaos, Fault
from connectors.bigcommerce import NORMALISERS, BigCommerceConnector
from connectors.bigcommerce.check import check
from connectors.bigcommerce.client import open_client
from connectors.bigcommerce.contact_sync import plan_contact_sync, sync_contacts
from connectors.bigcommerce.models import Order, loads
from connectors.bigcommerce.normalise import OrdersNormaliser
from tests.cassettes.bigcommerce.spec_check import request_problems, spec_dir

pytestmark = pytest.mark.e2e

TOKEN = "tok_E2E_s3cr3t_4f9a1c"
TZ = "America/Chicago"
NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
FAST_RETRY = RetryPolicy(max_attempts=8, backoff_base=0.02, backoff_max=0.2, max_total_wait=60)


class SpecRecorder(httpx.HTTPTransport):
    """A real transport that also keeps (method, url, body) of every request sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, str(request.url), body))
        return super().handle_request(request)

    def problems(self) -> list[str]:
        if spec_dir() is None:
            return []
        return [p for method, url, body in self.sent for p in request_problems(method, url, body)]


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BC_E2E_TOKEN", TOKEN)


def bc_source(sandbox: BigCommerceSandbox, **overrides: Any) -> BigCommerceSource:
    raw = {
        "name": "bc",
        "type": "bigcommerce",
        "api_path": sandbox.api_path,
        "access_token_env": "BC_E2E_TOKEN",
        "timezone": TZ,
        "start_date": "2023-01-01",
        **overrides,
    }
    found = parse_config({"sources": [raw]}).sources[0]
    assert isinstance(found, BigCommerceSource)
    return found


def every_day(now: datetime = NOW) -> list[date]:
    """Every local day the sandbox's history covers (730 days), plus tomorrow's partition."""
    today = now.astimezone(ZoneInfo(TZ)).date()
    first = today - timedelta(days=732)
    return [first + timedelta(days=i) for i in range((today - first).days + 2)]


def landed(landing: Landing, entity: str) -> list[tuple[str, datetime | None, str]]:
    out = []
    for manifest in landing.manifests("bc", entity):
        table = landing.read(manifest)
        if table is not None:
            out += zip(*(table.column(c).to_pylist() for c in ("id", "modified_at", "payload")),
                       strict=True)  # fmt: skip
    return out


def line_items(payload: str) -> int:
    return len(Order.model_validate(loads(payload)).line_items())


def sync_orders(
    sandbox: BigCommerceSandbox, landing: Landing, days: list[date] | None = None, **options: Any
) -> tuple[dict[str, Any], SpecRecorder]:
    recorder = SpecRecorder()
    src = bc_source(sandbox, **options.pop("source", {}))
    with BigCommerceConnector().open(src, transport=recorder, **options) as extractors:
        land_days(landing, "bc", extractors["orders"], days or every_day(), TZ, 1)
        return extractors["orders"].request_stats(), recorder


def extract_orders(
    sandbox: BigCommerceSandbox, window: Window | None = None, **options: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Every record of the orders extraction of `window` (default: the whole history), without
    landing: paging, slicing and pacing only."""
    window = window or Window(datetime(2023, 3, 1, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC))
    with BigCommerceConnector().open(bc_source(sandbox), **options) as extractors:
        orders = extractors["orders"]
        records = [record for page in orders.extract(window) for record in page]
        return records, orders.request_stats()


# ------------------------------------------------------------------------ full sync, paging


def test_a_full_sync_lands_every_order_and_line_item_exactly_once(tmp_path: Path) -> None:
    n = 4_500
    landing = Landing(tmp_path / "landing")
    with BigCommerceSandbox(orders=n, token=TOKEN, quota=10_000, now=NOW) as sb:
        stats, recorder = sync_orders(sb, landing)
        counters = sb.counters()
        truth_items = int(sb.data.o_nitems.sum())
    rows = landed(landing, "orders")
    ids = Counter(int(i) for i, _, _ in rows)
    assert sorted(ids) == list(range(1, n + 1)) and max(ids.values()) == 1
    assert sum(line_items(p) for _, _, p in rows) == truth_items
    pages = counters["by_endpoint"]["GET /v2/orders"]
    # ceil(N/250) full pages, one closing page per time slice, one tail pass: no per-order call
    assert math.ceil(n / 250) <= pages <= math.ceil(n / 250) + stats["slices"] + 1
    assert stats["slices"] > 1 and stats["line_item_fallbacks"] == 0
    assert set(counters["by_endpoint"]) == {"GET /v2/orders", "GET /v2/orders/count",
                                            "GET /v2/time"}  # fmt: skip
    assert counters["throttled_429"] == 0 and stats["failed_calls"] == 0
    assert recorder.problems() == []
    # and normalised: one sale per order, every line item once
    raw = pa.table(
        {"id": [r[0] for r in rows], "modified_at": [r[1] for r in rows],
         "payload": [r[2] for r in rows]},
        schema=RAW_RECORD_SCHEMA,
    )  # fmt: skip
    manifest = landing.manifests("bc", "orders")[0]
    batch = OrdersNormaliser().normalise(
        raw, manifest, NormaliseContext("bc", "bigcommerce", TZ, {})
    )
    assert batch.quarantine.num_rows == 0
    sales = batch.tables["core.sales"].filter(
        pa.compute.invert(batch.tables["core.sales"]["is_refund"])
    )
    assert (sales.num_rows, batch.tables["core.sale_items"].num_rows) == (n, truth_items)


def test_a_day_window_reads_its_day_and_the_look_back(tmp_path: Path) -> None:
    landing = Landing(tmp_path / "landing")
    day = date(2025, 2, 10)
    with BigCommerceSandbox(orders=20_000, token=TOKEN, quota=10_000, now=NOW) as sb:
        sync_orders(sb, landing, [day])
        tz = ZoneInfo(TZ)
        start = datetime.combine(day - timedelta(days=1), datetime.min.time(), tz).timestamp()
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).timestamp()
        truth = {i + 1 for i, m in enumerate(sb.data.o_modified) if start <= m < end}
    rows = landed(landing, "orders")
    assert {int(i) for i, _, _ in rows} == truth and len(rows) == len(truth) > 20
    assert [m.partition_key for m in landing.manifests("bc", "orders")] == ["2025-02-10"]


def test_paging_stops_on_a_short_page() -> None:
    with BigCommerceSandbox(orders=500, token=TOKEN, quota=10_000, now=NOW) as sb:
        records, stats = extract_orders(sb)
    # count, then 250 + 250 + the row at the cursor and the last one: a short page ends it
    assert stats["status_counts"] == {"200": 4} and stats["slices"] == 1
    assert len(records) == 500


def test_paging_stops_on_204() -> None:
    # A window reaching years before the store's first order: the early slices are empty.
    window = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC))
    with BigCommerceSandbox(orders=4_000, token=TOKEN, quota=10_000, now=NOW) as sb:
        records, stats = extract_orders(sb, window)
    assert stats["slices"] == 2 and stats["status_counts"]["204"] >= 1
    assert sorted(int(r.id) for r in records) == list(range(1, 4_001))


def test_rows_modified_while_paging_are_neither_skipped_nor_stale() -> None:
    chaos = Chaos(modify_during_paging=3, modify_served_during_paging=3)
    with BigCommerceSandbox(orders=6_000, token=TOKEN, quota=10_000, now=NOW, chaos=chaos) as sb:
        records, stats = extract_orders(sb)
        moved = sb.counters()["rows_modified_during_paging"]
        final = {i + 1: int(m) for i, m in enumerate(sb.data.o_modified)}
    assert moved > 50 and stats["slices"] > 1
    newest: dict[int, float] = {}
    for record in records:
        key = int(record.id)
        newest[key] = max(newest.get(key, 0), record.modified_at.timestamp())
    assert set(newest) == set(final)  # none skipped
    assert all(newest[i] == final[i] for i in final)  # the latest version of each landed


def test_line_items_beyond_the_50_embedded_are_fetched() -> None:
    recorder = SpecRecorder()
    with BigCommerceSandbox(orders=6, items_per_order=100, token=TOKEN, now=NOW) as sb:
        records, stats = extract_orders(sb, transport=recorder)
        counters = sb.counters()
        truth = [int(x) for x in sb.data.o_nitems]
    records.sort(key=lambda r: int(r.id))
    assert [line_items(json.dumps(r.payload)) for r in records] == truth and min(truth) > 50
    assert stats["line_item_fallbacks"] == 6
    assert counters["by_endpoint"]["GET /v2/orders/{id}/products"] == 6
    assert recorder.problems() == []


# ------------------------------------------------------------------- rate limit and chaos


def test_the_quota_is_respected_and_nearly_saturated() -> None:
    """Acceptance, scaled: the live quota is 150 requests per 30 s; here 3 per window and the
    window shrunk to 2 s, so a short sync spans several windows. No request may fail for rate
    limiting, and paging may take at most 10% longer than the quota allows at best:
    (windows needed - 1) x window. (The full-size run is measured by hand: docs/bigcommerce.md.)"""
    quota, scale = 3, 1 / 15
    with BigCommerceSandbox(
        orders=2_500, items_per_order=1, token=TOKEN, quota=quota, time_scale=scale, now=NOW
    ) as sb:
        started = time.monotonic()
        records, stats = extract_orders(sb)
        elapsed = time.monotonic() - started
        counters = sb.counters()
    requests = counters["requests_total"]
    minimum = (math.ceil(requests / quota) - 1) * 30 * scale
    assert counters["throttled_429"] == 0 and stats["throttled_429"] == 0
    assert stats["failed_calls"] == 0 and len(records) == 2_500
    assert minimum >= 6 and elapsed < 1.10 * minimum, (requests, minimum, elapsed)


def test_retries_absorb_5xx_overload_truncated_bodies_and_resets() -> None:
    chaos = Chaos(
        server_error=Fault(probability=0.05, first=1),
        throttle_without_headers=Fault(first=1),
        truncated_json=Fault(first=1, paths=("v2/orders",)),
        html_200=Fault(first=1, paths=("v2/orders",)),
        connection_reset=Fault(first=1),
    )
    with BigCommerceSandbox(orders=3_000, token=TOKEN, quota=10_000, now=NOW, chaos=chaos) as sb:
        records, stats = extract_orders(sb, retry=FAST_RETRY)
        faults = sb.counters()["faults"]
    kinds = ("server_error", "throttle_without_headers", "truncated_json", "html_200")
    assert all(faults[k] >= 1 for k in (*kinds, "connection_reset"))
    assert stats["retries"] >= sum(v for k, v in faults.items() if k != "slow")
    assert sorted(int(r.id) for r in records) == list(range(1, 3_001))


# ---------------------------------------------------------------------------------- check


def test_check_names_the_missing_scopes_of_the_token() -> None:
    granted = ALL_SCOPES - {"Orders Read", "Store Inventory Read", "Customers Write"}
    with BigCommerceSandbox(orders=5, token=TOKEN, scopes=granted, now=NOW) as sb:
        problems = check(bc_source(sb, sync_contacts=True), timezone=TZ)
    assert [p.split("'")[1] for p in problems] == [
        "Orders Read", "Store Inventory Read", "Customers Write",
    ]  # fmt: skip
    assert all(p.startswith("sources[bc]: the access token lacks") for p in problems)


def test_check_reports_a_rejected_token_once_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BC_E2E_TOKEN", "tok_WRONG_9d8c7b")
    with BigCommerceSandbox(orders=5, token=TOKEN, now=NOW) as sb:
        problems = check(bc_source(sb), timezone=TZ)
        assert sb.counters()["requests_total"] == 1
    assert problems == [
        "sources[bc].access_token_env: BigCommerce rejected the token in BC_E2E_TOKEN (401 "
        "Unauthorized): it is wrong or revoked"
    ]


def test_check_and_sync_of_a_frozen_source_make_no_request() -> None:
    with BigCommerceSandbox(orders=5, token=TOKEN, now=NOW) as sb:
        assert check(bc_source(sb, freeze=True), timezone=TZ) == []
        assert sb.counters()["requests_total"] == 0


def test_aiq_sync_check_reports_the_scopes_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiq_sync.cli import main

    granted = ALL_SCOPES - {"Store Locations Read"}
    with BigCommerceSandbox(orders=5, token=TOKEN, scopes=granted, now=NOW) as sb:
        config = {
            "sources": [
                {"name": "bc", "type": "bigcommerce", "api_path": sb.api_path,
                 "access_token_env": "BC_E2E_TOKEN", "timezone": TZ}
            ]
        }  # fmt: skip
        path = tmp_path / "aiq_sync.yaml"
        path.write_text(json.dumps(config))
        assert main(["--config", str(path), "check"]) == 2
        out = capsys.readouterr().out
        assert out.strip() == (
            "sources[bc]: the access token lacks the 'Store Locations Read' scope (needed for "
            "store locations); add it to the store's API account and use the new token"
        )
        sb.scopes = ALL_SCOPES
        assert main(["--config", str(path), "check"]) == 0
    assert TOKEN not in out + capsys.readouterr().out


# ---------------------------------------------------------------------------------- secrets


def test_the_token_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    landing = Landing(tmp_path / "landing")
    chaos = Chaos(server_error=Fault(first=2), truncated_json=Fault(first=1))
    with BigCommerceSandbox(orders=8_000, customers=600, token=TOKEN, now=NOW, chaos=chaos) as sb:
        src = bc_source(sb)
        stats = []
        with BigCommerceConnector().open(src, retry=FAST_RETRY) as extractors:
            days = every_day()[-30:]  # a month: few partitions keep the load quick
            for entity in ("orders", "customers", "products"):
                land_days(landing, "bc", extractors[entity], days, TZ, 1)
            for entity in ("inventory", "store"):
                land_entity(landing, "bc", extractors[entity], "2025-03-14", None)
            stats = [e.request_stats() for e in extractors.values()]
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        ctx = NormaliseContext("bc", "bigcommerce", TZ, {})
        for normaliser in NORMALISERS:
            load_source(con, landing, normaliser, ctx)
        texts = []
        for schema, name in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        ).fetchall():
            texts.append(str(con.execute(f'SELECT * FROM "{schema}"."{name}"').fetchall()))
        assert con.execute("SELECT count(*) FROM core.sales").fetchone()[0] >= 200
    for path in landing.root.rglob("*"):
        if path.suffix == ".parquet":
            texts.append(str(pa.parquet.read_table(path).to_pylist()))
        elif path.is_file():
            texts.append(path.read_text())
    texts += [
        json.dumps(stats),
        caplog.text,
        (tmp_path / "w.duckdb").read_bytes().decode("latin-1"),
    ]
    assert "GET v2/orders" in caplog.text  # the retries were logged, by endpoint only
    for text in texts:
        assert TOKEN not in text


# --------------------------------------------------------------------------- contact sync


ENABLED = datetime(2025, 3, 14, 6, 0, tzinfo=UTC)  # after local midnight in Chicago


def _persona(key: str, **fields: Any) -> dict[str, Any]:
    """A drop persona first seen when contact sync was enabled, unless told otherwise."""
    source, src_id = key.split(":", 1)
    row = {"persona_key": key, "source": source, "source_type": "file_drop", "src_id": src_id}
    defaults = {"first_name": "A", "last_name": "B", "email": None, "phone": None}
    return {**row, **defaults, "created_at": ENABLED, "_version": "v1", **fields}


@pytest.fixture
def contact_store(tmp_path: Path):
    """A warehouse with the sandbox's customers loaded and drop personas to sync."""
    with BigCommerceSandbox(orders=0, customers=40, token=TOKEN, now=NOW) as sb:
        src = bc_source(sb, sync_contacts=True)
        landing = Landing(tmp_path / "landing")
        with BigCommerceConnector().open(src) as extractors:
            # Customers modified in the second half of 2024 only: the others are unknown to the
            # warehouse (the store has them, the last customers sync did not see them).
            days = [d for d in every_day() if date(2024, 7, 1) <= d <= date(2024, 12, 31)]
            land_days(landing, "bc", extractors["customers"], days, TZ, 0)
        con = warehouse.connect(tmp_path / "w.duckdb")
        warehouse.migrate(con)
        ctx = NormaliseContext("bc", "bigcommerce", TZ, {})
        load_source(con, landing, next(n for n in NORMALISERS if n.entity == "customers"), ctx)
        known = {r[0] for r in con.execute("SELECT src_id FROM core.personas").fetchall()}
        yield sb, src, con, known
        con.close()


def _add_personas(con: Any, rows: list[dict[str, Any]]) -> None:
    warehouse.merge(con, "core.personas", pa.Table.from_pylist(rows), ("persona_key",))


def test_contact_sync_creates_new_shoppers_once_in_batches_of_ten(contact_store) -> None:
    sb, src, con, known = contact_store
    today = date(2025, 3, 14)
    customers = {str(cid): sb.data.customer_record(cid) for cid in range(1, 41)}
    ours = [c for k, c in customers.items() if k in known]
    known_phone = next(p for c in ours if (p := phone_e164(c["phone"])))
    known_email = ours[0]["email"].lower()
    unknown_email = next(c["email"].lower() for k, c in customers.items() if k not in known)
    new = [
        _persona(f"drops:N{i}", email=f"new{i}@example.com", last_name=f"N{i}") for i in range(23)
    ]
    others = [
        _persona("drops:EMAIL", email=known_email),
        _persona("drops:PHONE", email="p@example.com", phone=known_phone),
        _persona("drops:LATE", email=unknown_email),
        _persona("drops:NOMAIL", phone="+15125550111"),
        _persona("drops:OLD", email="old@example.com", created_at=ENABLED - timedelta(days=2)),
    ]
    _add_personas(con, new + others)
    before = sb.counters()["by_endpoint"].get("POST /v3/customers", 0)
    with open_client(src) as client:
        dry = sync_contacts(con, client, src, today=today, timezone=TZ, dry_run=True)
        assert len(dry.would_create) == 23 and sb.counters()["customers_created"] == 0
        assert warehouse.get_state(con, "bc", "contact_sync", "enabled_on") is None
        report = sync_contacts(con, client, src, today=today, timezone=TZ)
        again = sync_contacts(con, client, src, today=today, timezone=TZ)
    counters = sb.counters()
    assert len(report.created) == 23 and report.rejected == [] and report.error is None
    assert counters["by_endpoint"]["POST /v3/customers"] - before == 3  # 10 + 10 + 3
    assert counters["customers_created"] == 23
    created = {c["email"]: c for c in sb.data.created_customers.values()}
    assert created["new7@example.com"]["last_name"] == "N7"
    matched = dict(report.matched)
    assert set(matched) == {"drops:EMAIL", "drops:PHONE", "drops:LATE"}
    assert "e-mail" in matched["drops:LATE"]  # found by asking the store (not synced yet)
    assert dict(report.skipped)["drops:NOMAIL"].startswith("no e-mail")
    assert again.created == [] and again.matched == [] and again.requests == 0
    assert warehouse.get_state(con, "bc", "contact_sync", "enabled_on") == "2025-03-14"
    statuses = dict(con.execute(
        "SELECT status, count(*) FROM ops.contact_sync GROUP BY status").fetchall())  # fmt: skip
    assert statuses == {"created": 23, "matched": 3}


def test_contact_sync_reports_a_422_for_its_record_only(contact_store) -> None:
    sb, src, con, known = contact_store
    taken = next(sb.data.customer_record(c)["email"] for c in range(1, 41) if str(c) not in known)
    _add_personas(
        con,
        [
            _persona("drops:A", email="a@example.com"),
            _persona("drops:TAKEN", email=taken),
            _persona("drops:C", email="c@example.com"),
        ],
    )
    with open_client(src) as client:
        # No look-up first: the store itself refuses the e-mail it already has.
        report = sync_contacts(
            con, client, src, today=date(2025, 3, 14), timezone=TZ, precheck=False
        )
    assert sorted(k for k, _ in report.created) == ["drops:A", "drops:C"]
    ((key, why, _),) = report.rejected
    assert key == "drops:TAKEN" and "already in use" in why
    plan = plan_contact_sync(con, src, enabled_on=date(2025, 3, 14), timezone=TZ)
    assert plan.to_create == []  # the rejection is remembered until the persona changes
    assert plan.skipped[0][1].startswith("rejected before with the same data")

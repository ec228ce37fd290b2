"""A BigCommerce source through Dagster: the factory's landing assets materialised over a
partition range against the sandbox, then the load step, then the contact sync asset; and a
frozen source that makes no request at all."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow as pa
import pytest

from aiq_sync import warehouse
from aiq_sync.config import AppConfig, parse_config
from aiq_sync.landing import Landing
from aiq_sync.sandbox.bigcommerce import BigCommerceSandbox
from assets.api_source import ASSET_PARTITION_RANGE_END, ASSET_PARTITION_RANGE_START
from assets.bigcommerce import build_contact_sync
from assets.factory import build_parts

pytestmark = pytest.mark.e2e

TOKEN = "tok_DAGSTER_7e1d_secret"
TZ = "America/Chicago"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BC_DG_TOKEN", TOKEN)


def make_config(tmp_path: Path, sandbox: BigCommerceSandbox, **source: Any) -> AppConfig:
    today = datetime.now(ZoneInfo(TZ)).date()
    raw = {
        "warehouse": "data/aiq.duckdb",
        "landing": "data/landing",
        "schedule": {"cron": "0 3 * * *", "timezone": TZ},
        "stores": [{"id": "downtown", "name": "Downtown", "keys": {"bc": "1"}}],
        "sources": [
            {
                "name": "bc",
                "type": "bigcommerce",
                "api_path": sandbox.api_path,
                "access_token_env": "BC_DG_TOKEN",
                "timezone": TZ,
                "start_date": (today - timedelta(days=40)).isoformat(),
                **source,
            }
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def land(config: AppConfig, days: int = 30) -> tuple[str, str]:
    """Materialise every landing asset of `bc`: the windowed ones over the last `days` days
    (one run, a partition range), then the snapshots."""
    parts = build_parts(config)
    assets = parts.landing["bc"]
    keys = parts.partitions["bc"].get_partition_keys()
    start, end = keys[-days - 1], keys[-1]
    windowed = [a for a in assets if a.partitions_def is not None]
    tags = {ASSET_PARTITION_RANGE_START: start, ASSET_PARTITION_RANGE_END: end}
    result = dg.materialize(windowed, resources=parts.resources, tags=tags)
    assert result.success
    snapshots = [a for a in assets if a.partitions_def is None]
    assert dg.materialize(snapshots, resources=parts.resources).success
    events = result.get_asset_materialization_events()
    assert {e.asset_key.path[-1] for e in events} == {"customers", "orders", "products"}
    assert TOKEN not in str([e.materialization.metadata for e in events])
    return start, end


def _midnight(day: date) -> float:
    return datetime.combine(day, datetime.min.time(), ZoneInfo(TZ)).timestamp()


def test_materialize_a_bigcommerce_source_then_load_it(tmp_path: Path) -> None:
    with BigCommerceSandbox(orders=20_000, customers=3_000, products=80, token=TOKEN) as sb:
        config = make_config(tmp_path, sb)
        start, end = land(config)
        # The run's window: the range's days plus the one-day look-back, in the store's zone.
        lo = _midnight(date.fromisoformat(start) - timedelta(days=1))
        hi = _midnight(date.fromisoformat(end) + timedelta(days=1))
        truth = {i + 1 for i, m in enumerate(sb.data.o_modified) if lo <= m < hi}
        truth_items = sum(int(sb.data.o_nitems[i - 1]) for i in truth)
        variants, locations = sb.data.n_variants, sb.data.n_locations
        parts = build_parts(config)
        assert dg.materialize([parts.core], resources=parts.resources).success
    landing = Landing(config.landing_path)
    assert len(landing.manifests("bc", "orders")) == 31
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        sales, items, refunds = con.execute(
            "SELECT count(*) FILTER (WHERE NOT is_refund), "
            "(SELECT count(*) FROM core.sale_items), count(*) FILTER (WHERE is_refund) "
            "FROM core.sales WHERE source = 'bc'"
        ).fetchone()
        assert (sales, items) == (len(truth), truth_items) and refunds > 0
        assert con.execute("SELECT count(*) FROM core.inventory").fetchone()[0] == (
            variants * locations
        )
        mapped = con.execute(
            "SELECT count(*) FROM core.sales WHERE location_key = '1' AND store_id = 'downtown'"
        ).fetchone()[0]
        assert mapped > 0
        unmapped = con.execute(
            "SELECT location_key, location_name FROM ops.unmapped_locations ORDER BY 1"
        ).fetchall()
        assert [k for k, _ in unmapped] == ["2", "3"] and all(name for _, name in unmapped)
        assert warehouse.get_state(con, "bc", "store", "timezone") == TZ
        personas = con.execute(
            "SELECT count(*) FILTER (WHERE src_id LIKE 'guest:%'), count(*) FROM core.personas"
        ).fetchone()
        assert personas[0] > 0 and personas[1] > personas[0]
        assert con.execute("SELECT count(*) FROM core.products").fetchone()[0] > 0


def test_a_frozen_source_makes_no_request(tmp_path: Path) -> None:
    with BigCommerceSandbox(orders=50, token=TOKEN) as sb:
        config = make_config(tmp_path, sb, freeze=True, sync_contacts=True)
        land(config, days=2)
        contact = build_contact_sync(config, config.sources[0])
        parts = build_parts(config)
        result = dg.materialize([parts.core, contact], resources=parts.resources)
        assert result.success
        assert sb.counters()["requests_total"] == 0
    meta = result.asset_materializations_for_node("bc__contact_sync")[0].metadata
    assert meta["skipped"].value.startswith("frozen")


def test_contact_sync_asset_creates_customers_once(tmp_path: Path) -> None:
    with BigCommerceSandbox(orders=0, customers=20, token=TOKEN) as sb:
        config = make_config(tmp_path, sb, sync_contacts=True)
        source = config.sources[0]
        parts = build_parts(config)
        contact = build_contact_sync(config, source)
        # First run: enables contact sync today; nothing new yet.
        first = dg.materialize([parts.core, contact], resources=parts.resources)
        assert first.success
        with warehouse.open_warehouse(config.warehouse_path) as con:
            now = datetime.now(ZoneInfo(TZ))
            rows = [
                {"persona_key": f"pos:{i}", "source": "pos", "source_type": "file_drop",
                 "src_id": str(i), "email": f"shopper{i}@example.com", "phone": None,
                 "first_name": "Sam", "last_name": f"Lee{i}", "created_at": now, "_version": "1"}
                for i in range(12)
            ]  # fmt: skip
            warehouse.merge(con, "core.personas", pa.Table.from_pylist(rows), ("persona_key",))
        second = dg.materialize([contact], resources=parts.resources)
        third = dg.materialize([contact], resources=parts.resources)
        created = sb.counters()["customers_created"]
        posts = sb.counters()["by_endpoint"]["POST /v3/customers"]
    meta = second.asset_materializations_for_node("bc__contact_sync")[0].metadata
    assert meta["created"].value == 12 and meta["rejected"].value == 0
    assert (created, posts) == (12, 2)
    again = third.asset_materializations_for_node("bc__contact_sync")[0].metadata
    assert again["created"].value == 0 and again["requests"].value == 0
    assert TOKEN not in str(meta) and "example.com" not in str(meta)

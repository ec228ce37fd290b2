"""The Webjoint connector against the sandbox: facility discovery, exact windows despite a loose
date filter and duplicates, paging stops, retries, a Dagster materialisation, the API key never
stored anywhere, and the acceptance: re-pulling a window changes nothing.

`WEBJOINT_ACCEPTANCE_ORDERS=30000 pytest -k acceptance -s` runs the acceptance at full size and
prints its numbers (the default is scaled down for test time)."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from aiq_sync import reports, warehouse
from aiq_sync.config import AppConfig, parse_config
from aiq_sync.extract import day_window, land_days, land_entity
from aiq_sync.http import ApiError
from aiq_sync.landing import Landing
from aiq_sync.loader import load_source
from aiq_sync.sandbox.webjoint import Chaos, Fault, WebjointSandbox
from assets.api_source import ASSET_PARTITION_RANGE_END, ASSET_PARTITION_RANGE_START
from assets.core import normalise_context
from assets.factory import build_parts
from connectors.registry import API_CONNECTORS
from connectors.webjoint import WebjointConnector, WebjointSetupError, normalisers

KEY = "wj-e2e-SECRET-4f1c9a7e"
ENV = "WJ_E2E_KEY"
LA = "America/Los_Angeles"
FAST = WebjointConnector(requests_per_second=2_000, burst=50)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, KEY)
    return KEY


def config(tmp_path: Path, base_url: str, **source: Any) -> AppConfig:
    raw = {
        "warehouse": str(tmp_path / "aiq.duckdb"),
        "landing": str(tmp_path / "landing"),
        "schedule": {"timezone": LA},
        "stores": [
            {"id": "midtown", "name": "Midtown", "keys": {"wj": "51"}},
            {"id": "downtown", "name": "Downtown", "keys": {"wj": ["52", "52/5202"]}},
        ],
        "sources": [
            {
                "name": "wj",
                "type": "webjoint",
                "api_key_env": ENV,
                "company_id": 7,
                "base_url": base_url,
                "start_date": (date.today() - timedelta(days=20)).isoformat(),
                **source,
            }
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def sandbox(**kwargs: Any) -> WebjointSandbox:
    options: dict[str, Any] = {"orders": 1500, "customers": 400, "products": 40}
    options |= {"api_key": KEY, "rate": None, "history_days": 20}
    return WebjointSandbox(**(options | kwargs))


def days_back(n: int) -> list[date]:
    today = datetime.now(ZoneInfo(LA)).date()
    return [today - timedelta(days=i) for i in range(n, 0, -1)]


def orders_landed(cfg: AppConfig, connector: WebjointConnector, days: list[date]) -> Any:
    with connector.open(cfg.source("wj")) as extractors:
        manifests = land_days(Landing(cfg.landing_path), "wj", extractors["orders"], days, LA, 1)
        return manifests, extractors["orders"].request_stats()


def landed_payloads(cfg: AppConfig, entity: str) -> list[dict[str, Any]]:
    landing = Landing(cfg.landing_path)
    out = []
    for manifest in landing.manifests("wj", entity):
        table = landing.read(manifest)
        out += [json.loads(p) for p in table.column("payload").to_pylist()] if table else []
    return out


def test_missing_key_variable_fails_naming_the_variable(tmp_path: Path) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9/prod/api/")
    os.environ.pop(ENV, None)
    with pytest.raises(WebjointSetupError, match=f"api_key_env: environment variable {ENV}"):
        FAST.client(cfg.source("wj"))


def test_every_facility_when_none_configured_and_a_new_one_is_picked_up(
    tmp_path: Path, key: str
) -> None:
    days = days_back(3)
    with sandbox() as sb:
        cfg = config(tmp_path, sb.base_url)
        _, stats = orders_landed(cfg, FAST, days)
        assert stats["facilities"] == ["51", "52", "53"]
        assert {o["_facility"]["id"] for o in landed_payloads(cfg, "orders")} == {"51", "52", "53"}
        sb.add_facility(name="Uptown")  # opens between two runs; no config change
        _, stats = orders_landed(cfg, FAST, days)
        assert stats["facilities"] == ["51", "52", "53", "54"]
        landed = landed_payloads(cfg, "orders")
        assert {o["_facility"]["id"] for o in landed} == {"51", "52", "53", "54"}
        assert {o["_facility"]["name"] for o in landed if o["facilityId"] == 54} == {"Uptown"}
        only = config(tmp_path / "only", sb.base_url, facility_ids=[52])
        _, stats = orders_landed(only, FAST, days)
        assert stats["facilities"] == ["52"]
        assert {o["facilityId"] for o in landed_payloads(only, "orders")} == {52}


def test_landed_orders_are_exactly_the_newest_versions_inside_the_window(
    tmp_path: Path, key: str
) -> None:
    days = days_back(4)
    window = day_window(days[0], LA, 1)
    end = day_window(days[-1], LA).end
    with sandbox(duplicate_share=0.08, stale_share=0.05, loose_days=2) as sb:
        cfg = config(tmp_path, sb.base_url)
        manifests, stats = orders_landed(cfg, FAST, days)
        truth = [o for fid in sb.facility_ids for o in sb.orders_in(fid, window.start, end)]
        served = sb.counters()
    landed = landed_payloads(cfg, "orders")
    assert served["duplicates_served"] > 0 and served["stale_served"] > 0
    paging = stats["paging"]
    assert paging["duplicates_dropped"] > 0 and paging["rows_outside_window"] > 0
    # Exactly the current version of every order updated in the window (+ look-back), once.
    assert sorted(o["id"] for o in landed) == sorted(o["id"] for o in truth)
    by_id = {o["id"]: o for o in truth}
    assert all({k: v for k, v in o.items() if k != "_facility"} == by_id[o["id"]] for o in landed)
    assert sum(m.rows for m in manifests) == len(truth)
    # Each order lands in the partition of its local update day (look-back rows: the first).
    for manifest in manifests:
        table = Landing(cfg.landing_path).read(manifest)
        for moment in table.column("modified_at").to_pylist():
            local = moment.astimezone(ZoneInfo(LA)).date()
            assert manifest.partition_key == max(days[0], local).isoformat()


def test_a_page_repeated_once_is_asked_again_and_nothing_is_lost(tmp_path: Path, key: str) -> None:
    chaos = Chaos(repeat_page=Fault(first=1, paths=("orders",)))
    with sandbox(orders=3000, chaos=chaos, duplicate_share=0, stale_share=0) as sb:
        cfg = config(tmp_path, sb.base_url, facility_ids=[51])
        days = days_back(6)
        manifests, stats = orders_landed(cfg, FAST, days)
        truth = sb.orders_in(51, day_window(days[0], LA, 1).start, day_window(days[-1], LA).end)
        injected = sb.counters()["faults"]["repeat_page"]
    assert injected == 1
    assert stats["paging"]["repeated_page_stops"] == []
    assert sum(m.rows for m in manifests) == len(truth) > 100  # more than the first page


def test_a_page_that_keeps_repeating_fails_the_window_instead_of_landing_part_of_it(
    tmp_path: Path, key: str
) -> None:
    chaos = Chaos(repeat_page=Fault(probability=1.0, paths=("orders",)))
    with sandbox(orders=3000, chaos=chaos, duplicate_share=0, stale_share=0) as sb:
        cfg = config(tmp_path, sb.base_url, facility_ids=[51])
        with pytest.raises(ApiError) as failure:
            orders_landed(cfg, FAST, days_back(6))
        requests = sb.counters()["by_endpoint"]["GET orders"]
    message = str(failure.value)
    assert "orders of facility 51: page [100,199] repeats page [0,99] after 2 retries" in message
    assert requests == 1 + 3  # page [0,99], then [100,199] three times: no loop
    assert not Landing(cfg.landing_path).manifests("wj", "orders")  # nothing committed


def test_throttling_and_server_errors_are_retried(tmp_path: Path, key: str) -> None:
    chaos = Chaos(server_error=Fault(first=2, paths=("orders",)), truncated_json=1)
    with sandbox(rate=40, burst=2, retry_after="fraction", chaos=chaos) as sb:
        cfg = config(tmp_path, sb.base_url, max_concurrency=3)
        manifests, stats = orders_landed(cfg, FAST, days_back(2))
        served = sb.counters()
    assert sum(m.rows for m in manifests) > 0
    assert served["throttled_429"] > 0 and stats["throttled_429"] == served["throttled_429"]
    assert stats["status_counts"]["500"] == 1 and stats["status_counts"]["502"] == 1
    assert stats["malformed_bodies"] == 1 and stats["failed_calls"] == 0


# ---------------------------------------------------------------------------------- Dagster


def _all_text_in(landing_root: Path) -> str:
    """Every manifest and every string cell of every landed Parquet file."""
    chunks = []
    for path in landing_root.rglob("*"):
        if path.suffix == ".json":
            chunks.append(path.read_text(encoding="utf-8"))
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
            for column in table.columns:
                chunks += [str(v) for v in column.to_pylist()]
    return "\n".join(chunks)


def _warehouse_has(path: Path, needle: str) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR' AND table_schema NOT IN ('information_schema', "
            "'pg_catalog')"
        ).fetchall()
        hits = []
        for schema, table, column in columns:
            found = con.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}" LIKE ?',
                [f"%{needle}%"],
            ).fetchone()[0]
            if found:
                hits.append(f"{schema}.{table}.{column}")
        return hits
    finally:
        con.close()


def _run_text(instance: dg.DagsterInstance, results: list[dg.ExecuteInProcessResult]) -> str:
    return "\n".join(
        repr(entry) for result in results for entry in instance.all_logs(result.run_id)
    )


@pytest.mark.e2e
def test_materialize_a_webjoint_source_and_the_key_is_never_stored(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(API_CONNECTORS["webjoint"], "requests_per_second", 2_000)
    days = days_back(3)
    with sandbox() as sb:
        cfg = config(tmp_path, sb.base_url)
        parts = build_parts(cfg)
        instance = dg.DagsterInstance.ephemeral()
        windowed = [a for a in parts.landing["wj"] if a.partitions_def is not None]
        snapshots = [a for a in parts.landing["wj"] if a.partitions_def is None]
        assert sorted(a.key.to_user_string() for a in windowed) == ["wj/customers", "wj/orders"]
        assert sorted(a.key.to_user_string() for a in snapshots) == [
            "wj/facilities",
            "wj/inventory",
        ]
        tags = {
            ASSET_PARTITION_RANGE_START: days[0].isoformat(),
            ASSET_PARTITION_RANGE_END: days[-1].isoformat(),
        }
        results = [
            dg.materialize(windowed, instance=instance, resources=parts.resources, tags=tags),
            dg.materialize(snapshots, instance=instance, resources=parts.resources),
        ]
        assert all(r.success for r in results)
        results.append(dg.materialize([parts.core], instance=instance, resources=parts.resources))
        assert results[-1].success
        # A run with a key the API rejects fails cleanly, naming the status, not the key.
        monkeypatch.setenv(ENV, KEY + "-revoked")
        failed = dg.materialize(
            windowed, instance=instance, resources=parts.resources, tags=tags,
            raise_on_error=False,
        )  # fmt: skip
        assert not failed.success
        results.append(failed)

    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in results[0].get_asset_materialization_events()
    }
    orders = meta["wj/orders"]
    assert orders["partitions"].value == 3 and orders["rows"].value > 0
    http = orders["http"].value
    assert http["facilities"] == ["51", "52", "53"] and http["paging"]["pages"] > 0
    with warehouse.open_warehouse(cfg.warehouse_path, read_only=True) as con:
        counts = reports.table_counts(con)
        unmapped = con.execute(
            "SELECT DISTINCT location_key FROM ops.unmapped_locations"
        ).fetchall()
        stores = con.execute(
            "SELECT location_key, store_id, count(*) FROM core.sales GROUP BY ALL ORDER BY 1"
        ).fetchall()
        vault = con.execute(
            "SELECT DISTINCT store_id FROM core.inventory WHERE location_key = '52/5202'"
        ).fetchall()
    assert all(counts[t] > 0 for t in ("core.sales", "core.sale_items", "core.personas"))
    assert counts["core.products"] > 0 and counts["core.inventory"] > 0
    assert unmapped == [("53",)]  # reported: facility 53 is in no store's keys
    assert [(k, s) for k, s, _ in stores] == [("51", "midtown"), ("52", "downtown"), ("53", None)]
    assert vault == [("downtown",)]
    checks = {c.check_name: c for c in results[2].get_asset_check_evaluations()}
    assert not checks["every_location_mapped"].passed and checks["unique_keys"].passed
    failure = _run_text(instance, [failed])
    assert "401 Unauthorized" in failure

    # The key is nowhere: landing files, warehouse, Dagster events and metadata, logs.
    assert KEY not in _all_text_in(cfg.landing_path)
    assert _warehouse_has(cfg.warehouse_path, KEY) == []
    assert KEY not in cfg.warehouse_path.read_bytes().decode("latin-1")
    assert KEY not in _run_text(instance, results)
    assert KEY not in caplog.text


@pytest.mark.e2e
def test_a_frozen_source_makes_no_request(tmp_path: Path, key: str) -> None:
    with sandbox() as sb:
        cfg = config(tmp_path, sb.base_url, freeze=True)
        parts = build_parts(cfg)
        days = days_back(2)
        tags = {
            ASSET_PARTITION_RANGE_START: days[0].isoformat(),
            ASSET_PARTITION_RANGE_END: days[-1].isoformat(),
        }
        instance = dg.DagsterInstance.ephemeral()
        for assets in (
            [a for a in parts.landing["wj"] if a.partitions_def is not None],
            [a for a in parts.landing["wj"] if a.partitions_def is None],
        ):
            run_tags = tags if assets[0].partitions_def is not None else {}
            result = dg.materialize(
                assets, instance=instance, resources=parts.resources, tags=run_tags
            )
            assert result.success
        assert sb.counters()["requests_total"] == 0


# ------------------------------------------------------------------------------- acceptance


def _fingerprint(path: Path) -> dict[str, Any]:
    with warehouse.open_warehouse(path, read_only=True) as con:
        return {
            table: con.execute(
                f"SELECT count(*), sum(hash(COLUMNS(* EXCLUDE (quarantined_at)))) FROM {table}"
                if table == "ops.quarantine"
                else f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {table}"
            ).fetchall()
            for table in reports.SUMMARY_TABLES
        }


def _pull_and_load(cfg: AppConfig, connector: WebjointConnector, days: list[date]) -> dict:
    landing = Landing(cfg.landing_path)
    started = time.monotonic()
    with connector.open(cfg.source("wj")) as extractors:
        for entity in ("orders", "customers"):
            land_days(landing, "wj", extractors[entity], days, LA, 1)
        stats = extractors["orders"].request_stats()
    pulled = time.monotonic()
    with warehouse.open_warehouse(cfg.warehouse_path) as con:
        ctx = normalise_context(cfg, "wj")
        for normaliser in normalisers():
            load_source(con, landing, normaliser, ctx)
    return {"requests": stats["requests"], "pull_s": pulled - started,
            "load_s": time.monotonic() - pulled, "paging": stats["paging"]}  # fmt: skip


@pytest.mark.e2e
def test_acceptance_repulling_a_week_three_times_changes_nothing(tmp_path: Path, key: str) -> None:
    orders = int(os.environ.get("WEBJOINT_ACCEPTANCE_ORDERS", "6000"))
    days = days_back(7)
    with sandbox(
        facilities=3, orders=orders, customers=max(400, orders // 6), products=150,
        history_days=14, duplicate_share=0.05, stale_share=0.02,
    ) as sb:  # fmt: skip
        cfg = config(tmp_path, sb.base_url)
        with FAST.open(cfg.source("wj")) as extractors:  # inventory once: not a window
            for entity in ("facilities", "inventory"):
                land_entity(Landing(cfg.landing_path), "wj", extractors[entity], "s", None)
        runs = [_pull_and_load(cfg, FAST, days)]
        once = _fingerprint(cfg.warehouse_path)
        runs += [_pull_and_load(cfg, FAST, days) for _ in range(2)]
        thrice = _fingerprint(cfg.warehouse_path)
        served = sb.counters()
    assert once == thrice
    assert once["core.sales"][0][0] > orders * 7 / 14 * 0.9  # most of the week's orders
    assert served["duplicates_served"] > 0 and served["stale_served"] > 0
    facility_days = 3 * len(days)
    print(
        f"\nacceptance: {orders} orders, 3 facilities, 7 days pulled 3x: "
        f"sales={once['core.sales'][0][0]} items={once['core.sale_items'][0][0]} "
        f"personas={once['core.personas'][0][0]} quarantine={once['ops.quarantine'][0][0]}; "
        + "; ".join(
            f"pull {i + 1}: {r['requests']} requests ({r['requests'] / facility_days:.2f} per "
            f"facility-day incl. customers), {r['pull_s']:.1f}s pull, {r['load_s']:.1f}s load"
            for i, r in enumerate(runs)
        )
    )

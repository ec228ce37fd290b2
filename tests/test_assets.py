"""Dagster: the definitions, the drop sensor's cursor, and real materialisations."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from aiq_sync import reports, warehouse
from aiq_sync.config import AppConfig, load_config
from assets.factory import build_definitions, build_parts
from assets.runner import run_sync
from examples.generate_drops import DropReport, DropSpec, generate
from tests.conftest import line, write_drop

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = DropSpec(days=12, customers=300, lines_target=2500, bad_lines=10, bad_files=3)


@pytest.fixture(scope="module")
def small_drops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DropReport]:
    folder = tmp_path_factory.mktemp("drops")
    return folder, generate(folder, SMALL)


@pytest.fixture
def demo_config(tmp_path: Path, small_drops: tuple[Path, DropReport]) -> AppConfig:
    """The shipped demo config, pointed at a copy of small generated drops in tmp_path."""
    folder, _ = small_drops
    shutil.copytree(folder, tmp_path / "drops")
    text = (EXAMPLES / "aiq_sync.yaml").read_text(encoding="utf-8")
    # The demo's drops source only: its API sources need the sandboxes examples/demo.py runs.
    text = text.split("\n  # A BigCommerce store")[0]
    text = re.sub(r', (bc|wj|od)-demo: "\d+"', "", text).replace("../data/", "data/")
    (tmp_path / "aiq_sync.yaml").write_text(text, encoding="utf-8")
    assert [s.name for s in load_config(tmp_path / "aiq_sync.yaml").sources] == ["drops"]
    return load_config(tmp_path / "aiq_sync.yaml")


def test_demo_definitions_snapshot() -> None:
    config = load_config(EXAMPLES / "aiq_sync.yaml")
    defs = build_definitions(config)
    repo = defs.get_repository_def()
    keys = sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys())
    assert keys == [
        "bc-demo/contact_sync", "bc-demo/customers", "bc-demo/inventory", "bc-demo/orders",
        "bc-demo/products", "bc-demo/store", "core/contacts", "core/inventory", "core/personas",
        "core/products", "core/sale_items", "core/sales", "core/stores", "drops/lines",
        "loyalty/members", "loyalty/opt_in_requests", "loyalty/points_ledger", "od-demo/lines",
        "ops/quarantine", "ops/unmapped_locations", "wj-demo/customers", "wj-demo/facilities",
        "wj-demo/inventory", "wj-demo/orders",
    ]  # fmt: skip
    assert sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")) == [
        "bc_demo_extract", "bc_demo_snapshot", "drops_land", "load_warehouse", "od_demo_land",
        "wj_demo_extract", "wj_demo_snapshot",
    ]  # fmt: skip
    # the automation sensor runs core_tables after landings (eager automation condition)
    assert sorted(s.name for s in repo.sensor_defs) == [
        "drops_drop_sensor", "load_after_landing", "od_demo_drop_sensor",
    ]  # fmt: skip
    schedules = {s.name: (s.cron_schedule, s.execution_timezone) for s in repo.schedule_defs}
    assert set(schedules) == {
        "nightly_sync", "bc_demo_nightly", "bc_demo_snapshot_nightly", "wj_demo_nightly",
        "wj_demo_snapshot_nightly",
    }  # fmt: skip
    assert set(schedules.values()) == {("0 3 * * *", "America/Los_Angeles")}
    orders = repo.assets_defs_by_key[dg.AssetKey(["bc-demo", "orders"])]
    assert orders.op.pool == "api_bc_demo"
    core = repo.assets_defs_by_key[dg.AssetKey(["core", "sales"])]
    assert core.op.pool == "duckdb_writer"
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in core.check_specs)
    assert "ops/unmapped_locations:every_location_mapped" in checks
    assert "ops/quarantine:quarantine_share" in checks
    assert "core/sale_items:unique_keys" in checks


def test_drop_sensor_cursor_runs_once_per_new_or_changed_file(
    make_config: Callable[..., AppConfig],
) -> None:
    config = make_config()
    folder = config.resolve("drops")
    a = write_drop(folder / "a.csv", [line()])
    write_drop(folder / "b.csv", [line(TransactionID="T2")])
    (sensor,) = [s for s in build_parts(config).sensors if s.name == "drops_drop_sensor"]
    instance = dg.DagsterInstance.ephemeral()

    first = sensor(dg.build_sensor_context(instance=instance))
    assert sorted(r.partition_key for r in first.run_requests) == ["a.csv", "b.csv"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["a.csv", "b.csv"]
    assert all(
        str(os.path.getsize(folder / r.partition_key)) in r.run_key for r in first.run_requests
    )

    unchanged = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert not unchanged.run_requests

    write_drop(a, [line(), line(Item_ID="I2")])  # same name, new size and mtime
    changed = sensor(dg.build_sensor_context(instance=instance, cursor=unchanged.cursor))
    assert [r.partition_key for r in changed.run_requests] == ["a.csv"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key

    b = folder / "b.csv"
    b_bytes, b_stat = b.read_bytes(), b.stat()
    b.unlink()  # deleting a file starts nothing and forgets it
    after_delete = sensor(dg.build_sensor_context(instance=instance, cursor=changed.cursor))
    assert not after_delete.run_requests
    assert set(json.loads(after_delete.cursor)["files"]) == {"a.csv"}

    # Put back unchanged (same bytes and mtime). If it vanished before its run landed anything,
    # the first run key is spent: the sensor must ask again under a key Dagster has not seen.
    b.write_bytes(b_bytes)
    os.utime(b, ns=(b_stat.st_atime_ns, b_stat.st_mtime_ns))
    back = sensor(dg.build_sensor_context(instance=instance, cursor=after_delete.cursor))
    spent = {r.run_key for r in (*first.run_requests, *changed.run_requests)}
    assert [r.partition_key for r in back.run_requests] == ["b.csv"]
    assert back.run_requests[0].run_key not in spent
    again = sensor(dg.build_sensor_context(instance=instance, cursor=back.cursor))
    assert not again.run_requests  # and only once


def test_drop_sensor_reads_the_first_cursor_format(make_config: Callable[..., AppConfig]) -> None:
    """A sensor tick after an upgrade must not re-land every file."""
    config = make_config()
    folder = config.resolve("drops")
    write_drop(folder / "a.csv", [line()])
    (sensor,) = [s for s in build_parts(config).sensors if s.name == "drops_drop_sensor"]
    instance = dg.DagsterInstance.ephemeral()
    first = sensor(dg.build_sensor_context(instance=instance))
    old_format = json.dumps(json.loads(first.cursor)["files"])  # {name: fingerprint}
    upgraded = sensor(dg.build_sensor_context(instance=instance, cursor=old_format))
    assert not upgraded.run_requests


def test_frozen_source_sensor_reads_nothing(make_config: Callable[..., AppConfig]) -> None:
    config = make_config(
        sources=[{"name": "drops", "type": "file_drop", "location": "drops", "freeze": True}]
    )
    write_drop(config.resolve("drops") / "a.csv", [line()])
    sensor = next(s for s in build_parts(config).sensors if s.name == "drops_drop_sensor")
    result = sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))
    assert isinstance(result, dg.SkipReason) and "frozen" in (result.skip_message or "")


@pytest.mark.e2e
def test_materialize_demo_definitions_loads_every_good_line(
    demo_config: AppConfig, small_drops: tuple[Path, DropReport]
) -> None:
    _, truth = small_drops
    parts = build_parts(demo_config)
    instance = dg.DagsterInstance.ephemeral()
    files = sorted(p.name for p in demo_config.resolve("drops").glob("*.csv"))
    instance.add_dynamic_partitions("drops__files", files)
    for name in files:
        result = dg.materialize(
            parts.landing["drops"],
            partition_key=name,
            instance=instance,
            resources=parts.resources,
        )
        assert result.success
    result = dg.materialize([parts.core], instance=instance, resources=parts.resources)
    assert result.success

    with warehouse.open_warehouse(demo_config.warehouse_path, read_only=True) as con:
        counts = reports.table_counts(con)
        refunds = con.execute("SELECT count(*) FROM core.sales WHERE is_refund").fetchone()[0]
        bad = con.execute("SELECT file, line FROM ops.quarantine ORDER BY 1, 2").fetchall()
    assert counts["core.sale_items"] == truth.good_lines
    assert counts["core.sales"] == truth.transactions
    assert counts["core.personas"] == truth.customers_with_sales
    assert refunds == truth.refund_transactions
    assert bad == sorted((f, n) for f, n, _ in truth.bad_lines)

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    unmapped = checks["every_location_mapped"]
    assert not unmapped.passed and unmapped.severity == dg.AssetCheckSeverity.WARN
    assert "drops:99" in (unmapped.description or "")
    assert checks["quarantine_share"].passed
    sales_meta = result.asset_materializations_for_node("core_tables")[1].metadata
    assert sales_meta["rows"].value == truth.transactions


@pytest.mark.e2e
def test_cli_run_twice_gives_identical_tables(demo_config: AppConfig) -> None:
    lines: list[str] = []
    first = run_sync(demo_config, out=lines.append)
    assert first.ok, first.failures
    assert any(line.startswith("[") and "drops/lines sales_" in line for line in lines)

    def snapshot() -> dict[str, object]:
        with warehouse.open_warehouse(demo_config.warehouse_path, read_only=True) as con:
            return {
                t: con.execute(
                    f"SELECT count(*), sum(hash(COLUMNS(* EXCLUDE (quarantined_at)))) FROM {t}"
                    if t == "ops.quarantine"
                    else f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {t}"
                ).fetchall()
                for t in reports.SUMMARY_TABLES
            }

    before = snapshot()
    lines.clear()
    second = run_sync(demo_config, out=lines.append)
    assert second.ok and second.landed == 0 and second.unchanged == SMALL.days
    assert snapshot() == before
    forced = run_sync(demo_config, force=True, out=lines.append)
    assert forced.landed == SMALL.days
    assert snapshot() == before


@pytest.mark.e2e
def test_run_applies_the_rules_and_purge_removes_members_explicitly(
    demo_config: AppConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiq_sync.cli import main

    assert run_sync(demo_config, out=lambda _: None).ok
    with warehouse.open_warehouse(demo_config.warehouse_path, read_only=True) as con:
        members = con.execute(
            "SELECT count(*) FROM loyalty.members WHERE source = 'drops'"
        ).fetchone()[0]
        linked = con.execute("SELECT count(contact_id) = count(*) FROM core.personas").fetchone()
    assert members > 0 and linked == (True,)
    config_path = str(demo_config.base_dir / "aiq_sync.yaml")
    code = main(
        [
            "--config",
            config_path,
            "loyalty",
            "purge",
            "--source",
            "drops",
            "--reason",
            "enroll_after",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"removed {members} member(s) of drops enrolled for enroll_after" in out
    assert "the next run enrolls whoever qualifies again" in out
    with warehouse.open_warehouse(demo_config.warehouse_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM loyalty.members").fetchone()[0] == 0


@pytest.mark.e2e
def test_a_frozen_source_ignores_new_upstream_data_and_keeps_serving(
    demo_config: AppConfig, tmp_path: Path
) -> None:
    assert run_sync(demo_config, out=lambda _: None).ok
    with warehouse.open_warehouse(demo_config.warehouse_path, read_only=True) as con:
        before = reports.table_counts(con)
    raw = (tmp_path / "aiq_sync.yaml").read_text(encoding="utf-8")
    (tmp_path / "aiq_sync.yaml").write_text(
        raw.replace("    type: file_drop\n", "    type: file_drop\n    freeze: true\n"),
        encoding="utf-8",
    )
    frozen = load_config(tmp_path / "aiq_sync.yaml")
    assert frozen.source("drops").freeze
    write_drop(frozen.resolve("drops") / "sales_new.csv", [line(TransactionID="NEW1")])
    lines: list[str] = []
    assert run_sync(frozen, out=lines.append).ok
    assert any("frozen (use last backup) since 20" in line for line in lines), lines
    with warehouse.open_warehouse(frozen.warehouse_path, read_only=True) as con:
        assert reports.table_counts(con) == before
        assert con.execute(
            "SELECT count(*) FROM core.sales WHERE src_sale_id = 'NEW1'"
        ).fetchone() == (0,)
    (tmp_path / "aiq_sync.yaml").write_text(raw, encoding="utf-8")
    thawed = load_config(tmp_path / "aiq_sync.yaml")
    assert run_sync(thawed, out=lambda _: None).ok
    with warehouse.open_warehouse(thawed.warehouse_path, read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM core.sales WHERE src_sale_id = 'NEW1'"
        ).fetchone() == (1,)


def test_a_file_deleted_before_its_run_is_a_warning_not_a_failure(
    make_config: Callable[..., AppConfig],
) -> None:
    config = make_config()
    parts = build_parts(config)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops__files", ["gone.csv"])
    result = dg.materialize(
        parts.landing["drops"],
        partition_key="gone.csv",
        instance=instance,
        resources=parts.resources,
    )
    assert result.success
    (event,) = result.asset_materializations_for_node(result.job_def.nodes[0].name)
    assert event.metadata["status"].value == "vanished"


def test_load_waits_for_landings_in_progress_but_not_for_ones_that_never_landed() -> None:
    from assets.core import LOAD_AFTER_LANDING

    text = repr(LOAD_AFTER_LANDING)
    assert "label='any_deps_in_progress'" in text and "label='any_deps_updated'" in text
    assert "any_deps_missing" not in text


@pytest.mark.e2e
def test_cli_run_reports_each_api_asset_once_with_its_partition_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from aiq_sync.config import parse_config
    from aiq_sync.sandbox.webjoint import WebjointSandbox

    monkeypatch.setenv("WJ_TEST_KEY", "k")
    now = datetime(2026, 10, 31, tzinfo=UTC)
    with WebjointSandbox(
        api_key="k", orders=300, customers=50, facilities=2, history_days=10, now=now, rate=None
    ) as sandbox:
        config = parse_config(
            {
                "warehouse": "w.duckdb",
                "landing": "landing",
                "sources": [
                    {"name": "wj", "type": "webjoint", "api_key_env": "WJ_TEST_KEY",
                     "company_id": 7, "base_url": sandbox.base_url, "start_date": "2026-10-20"}
                ],
            },
            base_dir=tmp_path,
        )  # fmt: skip
        lines: list[str] = []
        outcome = run_sync(config, instance=dg.DagsterInstance.ephemeral(), out=lines.append)
    assert outcome.ok, outcome.failures
    landed_lines = [line for line in lines if line.startswith("wj/") and "records in" in line]
    assert sorted(line.split()[0] for line in landed_lines) == [
        "wj/customers", "wj/facilities", "wj/inventory", "wj/orders",
    ]  # fmt: skip
    days = len({line.split()[1] for line in landed_lines if "snapshot" not in line})
    partitions = sum(int(line.split(" records in ")[1].split()[0]) for line in landed_lines)
    assert days == 1 and outcome.landed == partitions

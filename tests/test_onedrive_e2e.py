"""OneDrive drops end to end: the drop sensor, the landing asset and `aiq-sync run` against the
loopback Graph sandbox, real Dagster and real DuckDB.

Acceptance, scaled for test time: a drop folder with twelve months of files (two a month
here; 365 daily files measured by hand, see docs/onedrive.md) loads once; adding one file
loads only that file; a delta reset loads nothing twice; deleting a file deletes no data.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from aiq_sync import warehouse
from aiq_sync.config import AppConfig, FileDropSource
from aiq_sync.landing import Landing
from aiq_sync.sandbox.graph import GraphSandbox
from assets.factory import build_parts
from assets.runner import run_sync
from connectors.file_drop import ENTITY
from tests.conftest import HEADER, line

SECRET = "od-Client~Secret.value_9f3a"
FIRST_DAY = date(2025, 10, 1)


def drop_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow([row.get(h, "") for h in HEADER])
    return buffer.getvalue().encode()


def day_file(day: date, lines: int = 3) -> tuple[str, bytes, datetime]:
    stamp = day.strftime("%Y/%m/%d")
    rows = [
        line(
            TransactionID=f"T{day:%Y%m%d}{n // 2}",
            Item_ID=f"I{n}",
            Patient_Number=f"C{n % 4}",
            TransactionDate=stamp,
        )
        for n in range(lines)
    ]
    modified = datetime(day.year, day.month, day.day, 23, 30, tzinfo=UTC)
    return f"sales_{day.isoformat()}.csv", drop_bytes(rows), modified


def twelve_months(per_month: int = 2) -> list[date]:
    days = []
    for month in range(12):
        first = date(FIRST_DAY.year + (FIRST_DAY.month - 1 + month) // 12,
                     (FIRST_DAY.month - 1 + month) % 12 + 1, 1)  # fmt: skip
        days += [first + timedelta(days=14 * k) for k in range(per_month)]
    return days


@pytest.fixture
def sandbox() -> Iterator[GraphSandbox]:
    with GraphSandbox(client_secret=SECRET, page_size=10) as sb:
        yield sb


@pytest.fixture
def od_config(
    sandbox: GraphSandbox, make_config: Callable[..., AppConfig], monkeypatch: pytest.MonkeyPatch
) -> AppConfig:
    monkeypatch.setenv("OD_TENANT", sandbox.tenant_id)
    monkeypatch.setenv("OD_CLIENT", sandbox.client_id)
    monkeypatch.setenv("OD_SECRET", SECRET)
    return make_config(
        stores=[{"id": "midtown", "name": "Midtown", "keys": {"od": "101"}}],
        sources=[
            {
                "name": "od",
                "type": "file_drop",
                "location": sandbox.location,
                "timezone": "America/Los_Angeles",
                "tenant_id_env": "OD_TENANT",
                "client_id_env": "OD_CLIENT",
                "client_secret_env": "OD_SECRET",
                "graph_base_url": sandbox.graph_base_url,
                "login_base_url": sandbox.login_base_url,
            }
        ],
    )


def counts(config: AppConfig) -> tuple[int, int, int]:
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        row = con.execute(
            "SELECT (SELECT count(*) FROM core.sale_items), (SELECT count(*) FROM core.sales), "
            "(SELECT count(*) FROM ops.loaded_partitions WHERE source = 'od')"
        ).fetchone()
    assert row is not None
    return row


@pytest.mark.e2e
def test_twelve_months_load_once_then_only_the_new_file_and_a_reset_loads_nothing(
    sandbox: GraphSandbox,
    od_config: AppConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    days = twelve_months()
    for day in days:
        name, content, modified = day_file(day)
        sandbox.put_file(name, content, modified=modified)
    instance = dg.DagsterInstance.ephemeral()
    out: list[str] = []

    first = run_sync(od_config, instance=instance, out=out.append)
    assert first.ok, first.failures
    assert first.landed == len(days)
    assert counts(od_config)[:2] == (3 * len(days), 2 * len(days))
    assert sandbox.counters()["downloads"] == len(days)

    again = run_sync(od_config, instance=instance, out=out.append)
    assert again.ok and again.landed == 0 and again.unchanged == len(days)
    assert sandbox.counters()["downloads"] == len(days)  # nothing fetched twice

    name, content, modified = day_file(date(2026, 9, 30))
    sandbox.put_file(name, content, modified=modified)
    added = run_sync(od_config, instance=instance, out=out.append)
    assert added.landed == 1 and sandbox.counters()["downloads"] == len(days) + 1
    assert counts(od_config)[:2] == (3 * (len(days) + 1), 2 * (len(days) + 1))

    sandbox.expire_delta_links()  # the service asks for a resync: 410 Gone
    before = counts(od_config)
    reset = run_sync(od_config, instance=instance, out=out.append)
    assert reset.ok and reset.landed == 0
    assert sandbox.counters()["delta_gone"] == 1
    assert sandbox.counters()["downloads"] == len(days) + 1
    assert counts(od_config) == before

    sandbox.delete_file(name)  # deleting a file deletes no loaded data
    assert run_sync(od_config, instance=instance, out=out.append).landed == 0
    assert counts(od_config) == before

    # --from/--to select files by their OneDrive modification day.
    windowed = run_sync(
        od_config, instance=instance, force=True, start=date(2026, 1, 1),
        end=date(2026, 1, 31), out=out.append,
    )  # fmt: skip
    assert windowed.landed == 2

    # The client secret is nowhere: landing, listing state, warehouse, output, logs.
    landing = Landing(od_config.landing_path)
    for path in landing.root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET.encode() not in od_config.warehouse_path.read_bytes()
    assert SECRET not in "\n".join(out) and SECRET not in caplog.text
    manifest = landing.manifests("od", ENTITY)[0]
    assert manifest.origin["item_id"] and manifest.origin["ctag"]
    assert not list((landing.root / ".downloads").rglob("*.csv"))  # downloads cleaned up


@pytest.mark.e2e
def test_drop_sensor_lists_without_downloading_and_starts_one_run_per_change(
    sandbox: GraphSandbox, od_config: AppConfig
) -> None:
    for day in twelve_months(per_month=1)[:4]:
        name, content, modified = day_file(day)
        sandbox.put_file(name, content, modified=modified)
    parts = build_parts(od_config)
    (sensor,) = [s for s in parts.sensors if s.name == "od_drop_sensor"]
    instance = dg.DagsterInstance.ephemeral()

    first = sensor(dg.build_sensor_context(instance=instance))
    assert len(first.run_requests) == 4
    names = [r.partition_key for r in first.run_requests]
    assert first.dynamic_partitions_requests[0].partition_keys == names
    for request in first.run_requests:
        assert sandbox.item_id(request.partition_key) in request.run_key  # id + cTag + size

    unchanged = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert not unchanged.run_requests

    sandbox.put_file(names[0], day_file(FIRST_DAY, lines=5)[1])  # same name, new content
    changed = sensor(dg.build_sensor_context(instance=instance, cursor=unchanged.cursor))
    assert [r.partition_key for r in changed.run_requests] == [names[0]]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key

    sandbox.expire_delta_links()
    after_reset = sensor(dg.build_sensor_context(instance=instance, cursor=changed.cursor))
    assert not after_reset.run_requests

    sandbox.delete_file(names[1])
    after_delete = sensor(dg.build_sensor_context(instance=instance, cursor=after_reset.cursor))
    assert not after_delete.run_requests
    assert names[1] not in json.loads(after_delete.cursor)["files"]
    assert sandbox.counters()["downloads"] == 0  # the sensor never downloads

    # The landing run of one partition fetches that file only.
    instance.add_dynamic_partitions("od__files", [names[2], names[1]])
    result = dg.materialize(
        parts.landing["od"], partition_key=names[2], instance=instance, resources=parts.resources
    )
    meta = result.asset_materializations_for_node(result.job_def.nodes[0].name)[0].metadata
    assert meta["rows"].value == 3 and meta["status"].value == "ok"
    assert meta["requests"].value >= 3  # token, item lookup, content (+ the download)
    assert SECRET not in json.dumps({k: str(v.value) for k, v in meta.items()})
    assert sandbox.counters()["downloads"] == 1

    gone = dg.materialize(  # deleted after the sensor saw it: not a failure, nothing landed
        parts.landing["od"], partition_key=names[1], instance=instance, resources=parts.resources
    )
    meta = gone.asset_materializations_for_node(gone.job_def.nodes[0].name)[0].metadata
    assert meta["status"].value == "vanished"


@pytest.mark.e2e
def test_a_frozen_onedrive_source_makes_no_request(
    sandbox: GraphSandbox, od_config: AppConfig, make_config: Callable[..., AppConfig]
) -> None:
    raw = od_config.sources[0].model_dump(exclude={"source_type"}, exclude_none=True)
    frozen = make_config(
        stores=[], sources=[{**raw, "start_date": raw["start_date"].isoformat(), "freeze": True}]
    )
    sandbox.put_file(*day_file(FIRST_DAY)[:2])
    (sensor,) = [s for s in build_parts(frozen).sensors if s.name == "od_drop_sensor"]
    assert isinstance(sensor(dg.build_sensor_context()), dg.SkipReason)
    assert run_sync(frozen, instance=dg.DagsterInstance.ephemeral(), out=lambda _: None).ok
    assert sandbox.counters()["requests_total"] == 0


def test_check_location_signs_in_and_finds_the_folder(
    sandbox: GraphSandbox, od_config: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.file_drop.location import check_location

    source = od_config.sources[0]
    assert isinstance(source, FileDropSource)
    assert check_location(od_config, source) == []
    monkeypatch.setenv("OD_SECRET", "not-it-" + SECRET[::-1])
    (problem,) = check_location(od_config, source)
    assert problem.startswith("sources[od].location: ") and "AADSTS7000215" in problem
    assert SECRET[::-1] not in problem
    local = source.model_copy(update={"location": "nowhere"})
    assert check_location(od_config, local) == [
        f"sources[od].location: folder {od_config.resolve('nowhere')} does not exist"
    ]

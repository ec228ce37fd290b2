"""The real thing: `dagster dev` (webserver + daemon) picks up dropped files on its own.

The drop sensor launches one landing run per file; the `load_after_landing` automation
sensor then launches the load. Nothing is invoked by hand. Takes about a minute and a half
(the automation sensor ticks every 60 s).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from aiq_sync import warehouse
from examples.generate_drops import DropSpec, generate

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _failures(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> str:
    lines = []
    for run in runs:
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is not None and event.is_failure:
                lines.append(f"{run.job_name} {run.tags.get('dagster/partition')}: {entry.message}")
            elif entry.level >= 40 or (
                event is not None and event.event_type_value == "ENGINE_EVENT"
            ):
                lines.append(f"{run.job_name}: {entry.message[:500]}")
    return "runs failed:\n" + "\n".join(lines[-30:])


@pytest.mark.e2e
def test_daemon_lands_and_loads_dropped_files(tmp_path: Path) -> None:
    truth = generate(
        tmp_path / "drops",
        DropSpec(days=3, customers=100, lines_target=400, bad_lines=3, bad_files=1),
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    config = (ROOT / "examples" / "aiq_sync.yaml").read_text(encoding="utf-8")
    # Without its Graph sandbox the OneDrive source's sensor could only fail its ticks.
    config = re.sub(r', od-demo: "\d+"', "", config.split("\n  # Daily drops in a OneDrive")[0])
    config = config.replace("../data/", f"{tmp_path}/data/").replace(
        "location: drops", f"location: {tmp_path}/drops"
    )
    (tmp_path / "aiq_sync.yaml").write_text(config, encoding="utf-8")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AIQ_SYNC_CONFIG": str(tmp_path / "aiq_sync.yaml"),
    }
    dagster = Path(sys.executable).parent / "dagster"
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [str(dagster), "dev", "-m", "assets.definitions", "-p", str(_free_port())],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        loaded = None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline and loaded is None:
            time.sleep(3)
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            runs = instance.get_runs()
            failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            assert not failed, _failures(instance, failed)
            loaded = next(
                (
                    r
                    for r in runs
                    if r.tags.get("dagster/sensor_name") == "load_after_landing"
                    and r.status == dg.DagsterRunStatus.SUCCESS
                ),
                None,
            )
        assert loaded is not None, (
            "no load run finished in time:\n" + (tmp_path / "dev.log").read_text()[-3000:]
        )
        landing_runs = [r for r in instance.get_runs() if r.job_name == "drops_land"]
        assert sorted(r.tags["dagster/partition"] for r in landing_runs) == truth.files
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    with warehouse.open_warehouse(tmp_path / "data" / "aiq.duckdb", read_only=True) as con:
        items, sales, bad = con.execute(
            "SELECT (SELECT count(*) FROM core.sale_items), (SELECT count(*) FROM core.sales), "
            "(SELECT count(*) FROM ops.quarantine)"
        ).fetchone()
    assert (items, sales, bad) == (truth.good_lines, truth.transactions, len(truth.bad_lines))

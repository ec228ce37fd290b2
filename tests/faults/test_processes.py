"""Real `aiq-sync run` processes against the sandbox: killed with SIGKILL mid-extraction and
mid-load then re-run, and two runs at once on the same warehouse (a 30-day back-fill and
the nightly window). Each ends with the clean run's warehouse."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from aiq_sync.config import load_config
from aiq_sync.landing import Landing
from aiq_sync.sandbox.bigcommerce import Chaos
from aiq_sync.sandbox.common import Fault
from aiq_sync.writer_lock import writer_lock
from tests.faults.conftest import bc_sandbox, start_cli, today, write_config
from tests.faults.warehouse_hash import differences, table_hashes

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 120


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    return out


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[str], bool]) -> str:
    """Read the process's output line by line; SIGKILL it as soon as `ready(line)`."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + RUN_TIMEOUT
    for line in proc.stdout:
        seen.append(line)
        if ready(line):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(seen)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def test_sigkill_mid_extraction_then_rerun(
    tmp_path: Path, bc_clean: dict[str, tuple[int, str]]
) -> None:
    # Slow order requests: the snapshots land, then the kill hits while orders are paged.
    # The pass asks `/v2/orders/count` first and pages only after it, so once the count is
    # answered the first page is inside its 1 s delay. (Counting `GET /v2/orders` answers
    # does not work: the preflight scope probe is one, and when the window holds at most one
    # page the second answer is the pass's last, which commits before the kill.)
    chaos = Chaos(slow=Fault(probability=1.0, paths=("v2/orders",)), slow_seconds=1.0)
    with bc_sandbox(chaos) as sb:
        path = write_config(tmp_path, sb)
        proc = start_cli(path)
        deadline = time.monotonic() + RUN_TIMEOUT
        while sb.counters()["by_endpoint"].get("GET /v2/orders/count", 0) < 1:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        config = load_config(path)
        # Killed mid-pass: no order partition was committed, nothing was loaded.
        assert Landing(config.landing_path).manifests("bc", "orders") == []
        assert not config.warehouse_path.exists() or differences(
            table_hashes(config.warehouse_path), bc_clean
        )
        rerun = start_cli(path)
        out = _finish(rerun)
    assert rerun.returncode == 0, out
    assert differences(table_hashes(config.warehouse_path), bc_clean) == []


def test_sigkill_mid_load_then_rerun(tmp_path: Path, bc_clean: dict[str, tuple[int, str]]) -> None:
    with bc_sandbox() as sb:
        path = write_config(tmp_path, sb)
        # The first source entity's chunk committed; the others and the rules had not run.
        seen = _kill_when(start_cli(path), lambda line: ": loaded " in line)
        config = load_config(path)
        partial = table_hashes(config.warehouse_path)
        assert differences(partial, bc_clean), seen  # the kill did land mid-load
        assert partial["loyalty.members"][0] == 0, seen
        rerun = start_cli(path)
        out = _finish(rerun)
    assert rerun.returncode == 0, out
    assert differences(table_hashes(config.warehouse_path), bc_clean) == []


def test_backfill_and_nightly_started_at_once_on_one_warehouse(
    tmp_path: Path, bc_clean: dict[str, tuple[int, str]]
) -> None:
    first = today() - timedelta(days=30)
    yesterday = today() - timedelta(days=1)
    with bc_sandbox() as sb:
        path = write_config(tmp_path, sb)
        config = load_config(path)
        # Both reach their load step while the lock is held (here, by the test), so they
        # really do compete for the warehouse, whichever lands faster.
        with writer_lock(config.warehouse_path):
            runs = [
                Output(start_cli(path, "--from", first.isoformat())),  # the 30-day back-fill
                Output(start_cli(path, "--from", yesterday.isoformat())),  # the nightly window
            ]
            deadline = time.monotonic() + RUN_TIMEOUT
            while not all(WAITING in run.text for run in runs):
                assert all(r.proc.poll() is None for r in runs), [r.text for r in runs]
                assert time.monotonic() < deadline, [r.text for r in runs]
                time.sleep(0.05)
        for run in runs:
            run.wait()
    for run in runs:
        assert run.proc.returncode == 0, run.text
        assert f"{WAITING} {os.getpid()}" in run.text, run.text
        assert "Could not set lock" not in run.text and "warehouse error" not in run.text
    assert differences(table_hashes(config.warehouse_path), bc_clean) == []


WAITING = "waiting for the warehouse writer lock held by pid"


class Output:
    """A process's merged output, collected by a thread while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait(self) -> None:
        self.proc.wait(timeout=RUN_TIMEOUT)
        self._thread.join(timeout=10)

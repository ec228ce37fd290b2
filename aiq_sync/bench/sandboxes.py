"""The benchmark's sandboxes: each in its own process (`aiq-sync sandbox ...`), driven over
their loopback ``/_admin/`` routes, so the contenders' processes hold only their own memory
and the servers' JSON encoding does not share a GIL with the client being measured."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
from pydantic import BaseModel

# Not secrets: the sandboxes accept exactly these.
BC_TOKEN = "bench-bigcommerce-token"
WJ_KEY = "bench-webjoint-key"
BC_STORE_HASH = "bench1"
WJ_COMPANY = 7
BC_TIMEZONE = "America/Chicago"
WJ_TIMEZONE = "America/Los_Angeles"
HISTORY_DAYS = 730  # days of order history in both sandboxes (one landing partition a day)


class Scale(BaseModel):
    """Data sizes at one scale (1.0: the issue's 200k orders with ~600k items)."""

    bc_orders: int
    bc_customers: int
    bc_products: int
    bc_locations: int
    wj_facilities: int
    wj_orders: int
    wj_customers: int
    wj_products: int

    @classmethod
    def of(cls, scale: float, webjoint_share: float) -> Scale:
        def n(full: int, minimum: int) -> int:
            return max(minimum, round(full * scale))

        return cls(
            bc_orders=n(200_000, 100),
            bc_customers=n(50_000, 30),
            bc_products=n(5_000, 20),
            bc_locations=5,
            wj_facilities=5,
            wj_orders=max(50, round(200_000 * scale * webjoint_share)),
            wj_customers=max(20, round(50_000 * scale * webjoint_share)),
            wj_products=max(20, min(200, round(4_000 * scale))),  # client-paced: keep small
        )


class AdminClient:
    """The ``/_admin/`` routes of one running sandbox (aiq_sync.sandbox.common)."""

    def __init__(self, root: str) -> None:
        self._http = httpx.Client(base_url=root.rstrip("/") + "/_admin/", timeout=600)

    def counters(self) -> dict[str, Any]:
        return self._http.get("counters").raise_for_status().json()

    def holdings(self) -> dict[str, int]:
        return self._http.get("holdings").raise_for_status().json()

    def reset_counters(self) -> None:
        self._http.post("reset_counters").raise_for_status()

    def advance(self, seconds: int) -> int:
        return (
            self._http.post("advance", params={"seconds": seconds}).raise_for_status().json()["now"]
        )

    def modify(self, share: float) -> dict[str, int]:
        return self._http.post("modify", params={"share": share}).raise_for_status().json()

    def close(self) -> None:
        self._http.close()


@dataclass
class SandboxProcess:
    name: str
    process: subprocess.Popen[str]
    url: str  # API path (BigCommerce) or base URL (Webjoint)
    admin: AdminClient

    def stop(self) -> None:
        self.admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_SERVING = re.compile(r"serving at (\S+)")


def _start(name: str, args: list[str], log: Path) -> SandboxProcess:
    cmd = [sys.executable, "-m", "aiq_sync.cli", "sandbox", *args]
    err: IO[str] = log.open("w")
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 300  # 1M orders take a while to generate
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = _SERVING.search(line)
        if match:
            url = match.group(1)
            root = re.match(r"https?://[^/]+", url)
            assert root
            return SandboxProcess(name, process, url, AdminClient(root.group(0)))
    process.kill()
    raise RuntimeError(f"{name} sandbox did not start; see {log}")


def start_sandboxes(
    scale: Scale, now: datetime, workdir: Path, history_days: int = HISTORY_DAYS
) -> dict[str, SandboxProcess]:
    """Both sandboxes on free loopback ports, clocks fixed at `now`, no quota or pacing on the
    server side (the quota run measures that separately)."""
    stamp = now.isoformat()
    bc = _start(
        "bigcommerce",
        [
            "bigcommerce", "--port", "0", "--store-hash", BC_STORE_HASH, "--token", BC_TOKEN,
            "--orders", str(scale.bc_orders), "--customers", str(scale.bc_customers),
            "--products", str(scale.bc_products), "--locations", str(scale.bc_locations),
            "--items-per-order", "3", "--history-days", str(history_days),
            "--seed", "6", "--quota", "100000000",
            "--timezone", BC_TIMEZONE, "--now", stamp,
        ],
        workdir / "sandbox-bigcommerce.log",
    )  # fmt: skip
    try:
        wj = _start(
            "webjoint",
            [
                "webjoint", "--port", "0", "--api-key", WJ_KEY, "--company-id", str(WJ_COMPANY),
                "--facilities", str(scale.wj_facilities), "--orders", str(scale.wj_orders),
                "--customers", str(scale.wj_customers), "--products", str(scale.wj_products),
                "--history-days", str(history_days), "--seed", "6", "--rate", "0",
                "--timezone", WJ_TIMEZONE, "--now", stamp,
            ],
            workdir / "sandbox-webjoint.log",
        )  # fmt: skip
    except BaseException:
        bc.stop()
        raise
    return {"bc": bc, "wj": wj}

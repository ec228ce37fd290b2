"""The fault suite's fixtures: a small BigCommerce store and Webjoint company served by the
sandboxes with a fixed "now" (so every sandbox built with the same arguments serves the same
data), a config per test, a sync like `aiq-sync run` (in-process or as a real subprocess),
and each sandbox's clean-run warehouse hashes, computed once per session to compare with.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest
import yaml

from aiq_sync.config import AppConfig, load_config
from aiq_sync.http import RetryPolicy
from aiq_sync.sandbox.bigcommerce import BigCommerceSandbox
from aiq_sync.sandbox.bigcommerce import Chaos as BcChaos
from aiq_sync.sandbox.webjoint import Chaos as WjChaos
from aiq_sync.sandbox.webjoint import WebjointSandbox
from assets.runner import RunOutcome, run_sync
from connectors.bigcommerce import BigCommerceConnector
from connectors.registry import API_CONNECTORS
from tests.faults.warehouse_hash import table_hashes

ROOT = Path(__file__).resolve().parents[2]
TZ = "America/Chicago"
# Fixed for the whole session: sandboxes built a minute apart serve identical data.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
BC_TOKEN = "tok_FAULTS_bc_5d2e9a"
WJ_KEY = "wj_FAULTS_key_77c1f0"
BC_ENV, WJ_ENV = "FAULTS_BC_TOKEN", "FAULTS_WJ_KEY"
DAYS = 30  # history each run covers: start_date is DAYS days back
BC_SIZE: dict[str, Any] = {"orders": 4000, "customers": 300, "products": 40, "locations": 2}
WJ_SIZE: dict[str, Any] = {"orders": 1500, "customers": 300, "products": 40}
WJ_SIZE |= {"facilities": 2, "history_days": 45}
# Retries as in production, only with short pauses and a 1 s read timeout so a "slow" answer
# (chaos slow_seconds > 1) times out; the number of attempts is the production default.
FAST_RETRY = RetryPolicy(backoff_base=0.02, backoff_max=0.2, max_header_wait=2.0)
FAST_TIMEOUT = httpx.Timeout(1.0, connect=1.0)


def today() -> date:
    return datetime.now(ZoneInfo(TZ)).date()


def bc_sandbox(chaos: BcChaos | dict[str, Any] | None = None, **kw: Any) -> BigCommerceSandbox:
    fixed = {"seed": 11, "token": BC_TOKEN, "now": NOW, "timezone": TZ, "chaos": chaos}
    return BigCommerceSandbox(**(BC_SIZE | fixed | kw))


def wj_sandbox(chaos: WjChaos | dict[str, Any] | None = None, **kw: Any) -> WebjointSandbox:
    fixed = {"rate": None, "duplicate_share": 0.03, "stale_share": 0.02, "seed": 11}
    fixed |= {"api_key": WJ_KEY, "now": NOW, "timezone": TZ, "chaos": chaos}
    return WebjointSandbox(**(WJ_SIZE | fixed | kw))


def write_config(tmp: Path, sandbox: BigCommerceSandbox | WebjointSandbox, **extra: Any) -> Path:
    """aiq_sync.yaml in `tmp` for one source `bc` or `wj` served by `sandbox`."""
    start = (today() - timedelta(days=DAYS)).isoformat()
    rules = {"age_gate_confirmed": True, "enroll_after": start, "sms_double_opt_in_after": start}
    if isinstance(sandbox, BigCommerceSandbox):
        source = {"name": "bc", "type": "bigcommerce", "api_path": sandbox.api_path,
                  "access_token_env": BC_ENV}  # fmt: skip
        stores = [{"id": "downtown", "name": "Downtown", "keys": {"bc": "1"}}]
    else:
        source = {"name": "wj", "type": "webjoint", "base_url": sandbox.base_url,
                  "api_key_env": WJ_ENV, "company_id": 7}  # fmt: skip
        stores = [{"id": "midtown", "name": "Midtown", "keys": {"wj": "51"}}]
    raw = {
        "warehouse": "data/aiq.duckdb",
        "landing": "data/landing",
        "schedule": {"cron": "0 3 * * *", "timezone": TZ},
        "stores": stores,
        "sources": [{**source, "timezone": TZ, "start_date": start, **rules, **extra}],
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@dataclass
class Synced:
    outcome: RunOutcome
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines + self.outcome.failures)


def sync(config: AppConfig, **options: Any) -> Synced:
    """`aiq-sync run` in-process (a fresh ephemeral Dagster instance, like without
    DAGSTER_HOME), collecting its printed lines."""
    lines: list[str] = []
    outcome = run_sync(config, instance=dg.DagsterInstance.ephemeral(), out=lines.append, **options)
    return Synced(outcome, lines)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "AIQ_SYNC_CONFIG")}
    return env | {BC_ENV: BC_TOKEN, WJ_ENV: WJ_KEY, "PYTHONUNBUFFERED": "1",
                  "DAGSTER_DISABLE_TELEMETRY": "1"}  # fmt: skip


def start_cli(config_path: Path, *args: str) -> subprocess.Popen[str]:
    """`aiq-sync run` as its own process (the console script's module), output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiq_sync.cli", "--config", str(config_path), "run", *args],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class FastBigCommerce(BigCommerceConnector):
    """The production connector with FAST_RETRY and FAST_TIMEOUT."""

    @contextmanager
    def open(self, source: Any, **options: Any) -> Iterator[dict[str, Any]]:
        with super().open(source, retry=FAST_RETRY, timeout=FAST_TIMEOUT, **options) as ex:
            yield ex


@pytest.fixture(autouse=True)
def _secrets_and_fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BC_ENV, BC_TOKEN)
    monkeypatch.setenv(WJ_ENV, WJ_KEY)
    monkeypatch.setitem(API_CONNECTORS, "bigcommerce", FastBigCommerce())
    monkeypatch.setattr(API_CONNECTORS["webjoint"], "requests_per_second", 2_000)
    monkeypatch.setattr(API_CONNECTORS["webjoint"], "burst", 50)
    monkeypatch.setattr(API_CONNECTORS["webjoint"], "retry", FAST_RETRY)


def _clean(tmp: Path, make: Callable[[], Any]) -> dict[str, tuple[int, str]]:
    with make() as sb:
        config = load_config(write_config(tmp, sb))
        done = sync(config)
    assert done.outcome.ok, done.text
    return table_hashes(config.warehouse_path)


@pytest.fixture(scope="session")
def bc_clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Warehouse hashes after one clean run against the BigCommerce sandbox."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BC_ENV, BC_TOKEN)
        mp.setitem(API_CONNECTORS, "bigcommerce", FastBigCommerce())
        hashes = _clean(tmp_path_factory.mktemp("bc-clean"), bc_sandbox)
    assert hashes["core.sales"][0] > 50 and hashes["loyalty.members"][0] > 0
    return hashes


@pytest.fixture(scope="session")
def wj_clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WJ_ENV, WJ_KEY)
        mp.setattr(API_CONNECTORS["webjoint"], "requests_per_second", 2_000)
        mp.setattr(API_CONNECTORS["webjoint"], "burst", 50)
        hashes = _clean(tmp_path_factory.mktemp("wj-clean"), wj_sandbox)
    assert hashes["core.sales"][0] > 50
    return hashes

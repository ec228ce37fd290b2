"""Transient HTTP faults during a whole sync (land + load + loyalty rules, as `aiq-sync run`):
each case ends with exactly the warehouse of a clean run, and the sandbox confirms it really
injected the fault. Faults that outlast the bounded retries fail the run naming the source,
entity, window and cause, and leave the last good state untouched."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from aiq_sync.config import load_config
from aiq_sync.landing import Landing
from aiq_sync.sandbox.bigcommerce import Chaos as BcChaos
from aiq_sync.sandbox.common import Fault
from aiq_sync.sandbox.webjoint import Chaos as WjChaos
from tests.faults.conftest import bc_sandbox, sync, today, wj_sandbox, write_config
from tests.faults.warehouse_hash import differences, table_hashes

pytestmark = pytest.mark.e2e

# name -> (chaos, fault counters the sandbox must report as injected). The first N requests
# always get a fault, then a seeded probability; the `first` counts of one case stay below the
# client's 6 attempts, or the very first call would (rightly) give up.
BC_CASES: dict[str, tuple[BcChaos, tuple[str, ...]]] = {
    "5xx_burst": (
        BcChaos(server_error=Fault(first=3, probability=0.05, burst=2)),
        ("server_error",),
    ),
    "429_storm_without_headers": (
        BcChaos(throttle_without_headers=Fault(first=2, probability=0.05, burst=2)),
        ("throttle_without_headers",),
    ),
    "slow_past_timeout": (
        BcChaos(slow=Fault(first=2, probability=0.03), slow_seconds=1.3),
        ("slow",),
    ),
    "connection_reset": (
        BcChaos(connection_reset=Fault(first=2, probability=0.05)),
        ("connection_reset",),
    ),
    "truncated_and_malformed_json": (
        BcChaos(truncated_json=Fault(first=2, probability=0.05)),
        ("truncated_json",),
    ),
    "html_200": (BcChaos(html_200=Fault(first=2, probability=0.05)), ("html_200",)),
    "everything_at_once": (
        # The faults checked below each get `first=1`: probability alone drew no server error
        # in one run (one seeded stream shared by every fault type and request thread, so the
        # draws a type gets depend on thread timing). At most three in a row: under 6 attempts.
        BcChaos(
            server_error=Fault(first=1, probability=0.04),
            throttle_without_headers=0.04,
            connection_reset=Fault(first=1, probability=0.03),
            truncated_json=0.03,
            html_200=0.03,
            slow=Fault(first=1),
            slow_seconds=1.3,
        ),
        ("server_error", "connection_reset", "slow"),
    ),
}


def _injected(sb: Any) -> dict[str, int]:
    return sb.counters()["faults"]


@pytest.mark.parametrize("case", list(BC_CASES))
def test_bigcommerce_fault_ends_like_a_clean_run(
    case: str, tmp_path: Path, bc_clean: dict[str, tuple[int, str]]
) -> None:
    chaos, expected = BC_CASES[case]
    with bc_sandbox(chaos) as sb:
        config = load_config(write_config(tmp_path, sb))
        done = sync(config)
        injected = _injected(sb)
    assert done.outcome.ok, done.text
    assert all(injected[name] > 0 for name in expected), injected
    assert differences(table_hashes(config.warehouse_path), bc_clean) == []


def test_webjoint_429_storm_with_retry_after_headers(
    tmp_path: Path, wj_clean: dict[str, tuple[int, str]]
) -> None:
    # The client paces far faster than the sandbox's 15 requests/s allows: every burst over
    # the bucket gets a 429 with a (fractional) Retry-After.
    with wj_sandbox(rate=15, burst=1, retry_after="fraction") as sb:
        config = load_config(write_config(tmp_path, sb, max_concurrency=4))
        done = sync(config)
        served = sb.counters()
    assert done.outcome.ok, done.text
    assert served["throttled_429"] >= 5, served
    assert differences(table_hashes(config.warehouse_path), wj_clean) == []


def test_webjoint_faults_end_like_a_clean_run(
    tmp_path: Path, wj_clean: dict[str, tuple[int, str]]
) -> None:
    chaos = WjChaos(
        server_error=Fault(first=1, probability=0.02),
        throttle_without_headers=Fault(probability=0.02),
        truncated_json=Fault(first=1, probability=0.02),
        html_200=Fault(first=1),
        connection_reset=Fault(probability=0.02),
    )
    with wj_sandbox(chaos) as sb:
        config = load_config(write_config(tmp_path, sb))
        done = sync(config)
        injected = _injected(sb)
    assert done.outcome.ok, done.text
    assert min(injected[n] for n in ("server_error", "truncated_json", "html_200")) > 0, injected
    assert differences(table_hashes(config.warehouse_path), wj_clean) == []


def test_webjoint_page_repeated_once_loses_nothing(
    tmp_path: Path, wj_clean: dict[str, tuple[int, str]]
) -> None:
    # The server ignores `range` once (a glitch): the next request would have been fine.
    with wj_sandbox(WjChaos(repeat_page=Fault(first=1, paths=("orders",)))) as sb:
        config = load_config(write_config(tmp_path, sb))
        done = sync(config)
        injected = _injected(sb)
    assert injected["repeat_page"] == 1
    # The page is asked for again: the same warehouse as a clean run.
    assert done.outcome.ok, done.text
    assert differences(table_hashes(config.warehouse_path), wj_clean) == []


def test_a_fault_past_the_retries_fails_naming_source_entity_window_and_cause(
    tmp_path: Path, bc_clean: dict[str, tuple[int, str]]
) -> None:
    # A clean run first: the last good state. Then every order request answers 503.
    with bc_sandbox() as sb:
        config = load_config(write_config(tmp_path, sb))
        assert sync(config).outcome.ok
    good = table_hashes(config.warehouse_path)
    landing = Landing(config.landing_path)
    manifests = {m.partition_key: m.manifest_id for m in landing.manifests("bc", "orders")}
    down = BcChaos(server_error=Fault(probability=1.0, paths=("v2/orders",)),
                   server_error_statuses=(503,))  # fmt: skip
    yesterday = today() - timedelta(days=1)
    with bc_sandbox(down, port=urlparse(config.source("bc").api_path).port):
        failed = sync(config, start=yesterday)
    assert not failed.outcome.ok
    (failure,) = failed.outcome.failures
    assert failure.startswith(f"bc {yesterday}..{today()}:"), failure
    assert "orders" in failure and "503" in failure, failure
    assert "v2/orders" in failure, failure
    # The last good state: warehouse and landed partitions unchanged.
    assert table_hashes(config.warehouse_path) == good
    assert differences(good, bc_clean) == []
    after = {m.partition_key: m.manifest_id for m in landing.manifests("bc", "orders")}
    assert after == manifests

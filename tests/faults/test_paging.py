"""Records modified while the sync pages through them: the keyset paging and the tail pass
re-read them, so nothing is skipped and nothing is loaded twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aiq_sync.config import load_config
from aiq_sync.sandbox.bigcommerce import Chaos
from tests.faults.conftest import bc_sandbox, sync, today, write_config
from tests.faults.warehouse_hash import differences, table_hashes

pytestmark = pytest.mark.e2e


def test_records_modified_while_paging_are_neither_skipped_nor_duplicated(tmp_path: Path) -> None:
    # Enough orders in ten days for several 250-order pages, so rows can move between them.
    start = (today() - timedelta(days=10)).isoformat()
    chaos = Chaos(modify_during_paging=3, modify_served_during_paging=3)
    with bc_sandbox(chaos, orders=40_000, customers=2_000) as sb:
        faulted = load_config(write_config(tmp_path / "faulted", sb, start_date=start))
        done = sync(faulted)
        modified = sb.counters()["rows_modified_during_paging"]
        # Upstream is now in its final state: a clean pull of it is the reference.
        sb.chaos = Chaos()
        clean = load_config(write_config(tmp_path / "clean", sb, start_date=start))
        reference = sync(clean)
    assert done.outcome.ok and reference.outcome.ok, done.text + reference.text
    assert modified >= 6
    got, want = table_hashes(faulted.warehouse_path), table_hashes(clean.warehouse_path)
    assert want["core.sales"][0] > 500
    assert differences(got, want) == []

"""Landing partitions: atomic replace, manifest as the commit point."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from aiq_sync.landing import MANIFEST, Landing


def table(n: int) -> pa.Table:
    return pa.table({"id": pa.array([str(i) for i in range(n)], pa.string())})


def test_rerunning_a_partition_replaces_it(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    first = landing.write("bc", "orders", "2026-09-01", table(3), version="1")
    second = landing.write("bc", "orders", "2026-09-01", table(5), version="2")
    assert first.manifest_id != second.manifest_id
    current = landing.manifest("bc", "orders", "2026-09-01")
    assert current is not None and current.manifest_id == second.manifest_id
    assert landing.read(current).num_rows == 5
    folder = landing.partition_dir("bc", "orders", "2026-09-01")
    assert folder.name == "date=2026-09-01"
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, second.data_file]


def test_crash_before_the_manifest_commit_keeps_the_previous_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = Landing(tmp_path)
    good = landing.write("drops", "lines", "a.csv", table(2))
    real_replace = os.replace

    def crash_on_manifest(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == MANIFEST:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="simulated crash"):
        landing.write("drops", "lines", "a.csv", table(9))
    monkeypatch.undo()
    current = landing.manifest("drops", "lines", "a.csv")
    assert current is not None and current.manifest_id == good.manifest_id
    assert landing.read(current).num_rows == 2


def test_streamed_batches_and_empty_partitions(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    batches = (b for t in (table(2), table(3)) for b in t.to_batches())
    manifest = landing.write("s", "e", "2026-01-01", batches, schema=table(0).schema)
    assert manifest.rows == 5 and landing.read(manifest).num_rows == 5
    empty = landing.write("s", "e", "2026-01-02", iter(()), schema=table(0).schema)
    assert empty.rows == 0 and landing.read(empty).schema == table(0).schema
    assert [m.partition_key for m in landing.manifests("s", "e")] == ["2026-01-01", "2026-01-02"]


def test_partition_keys_that_are_file_names_are_quoted(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    landing.write("drops", "lines", "sales 2026/09?.csv", table(1))
    manifest = landing.manifest("drops", "lines", "sales 2026/09?.csv")
    assert manifest is not None and manifest.partition_key == "sales 2026/09?.csv"
    assert landing.partition_dir("drops", "lines", "sales 2026/09?.csv").parent == (
        tmp_path / "drops" / "lines"
    )


def test_a_suspended_partition_reopens_as_a_second_part_merged_at_commit(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    writer = landing.open_partition("bc", "orders", "2026-09-01")
    writer.write_batch(table(3).to_batches()[0])
    writer.suspend()  # its file is finished and closed: no memory held until the commit
    assert not writer.is_open and landing.open_files.now == 0
    writer.write_batch(table(2).to_batches()[0])
    assert landing.manifest("bc", "orders", "2026-09-01") is None  # nothing visible yet
    manifest = writer.commit()
    assert manifest.rows == 5
    assert landing.read(manifest).column("id").to_pylist() == ["0", "1", "2", "0", "1"]
    folder = landing.partition_dir("bc", "orders", "2026-09-01")
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, manifest.data_file]
    assert landing.open_files.now == 0 and landing.open_files.peak == 1


def test_aborting_a_partition_in_parts_removes_every_part(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    good = landing.write("bc", "orders", "2026-09-01", table(4))
    writer = landing.open_partition("bc", "orders", "2026-09-01")
    for n in (1, 2, 3):
        writer.write_batch(table(n).to_batches()[0])
        writer.suspend()
    writer.abort()
    folder = landing.partition_dir("bc", "orders", "2026-09-01")
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, good.data_file]
    current = landing.manifest("bc", "orders", "2026-09-01")
    assert current is not None and landing.read(current).num_rows == 4


def test_slices_of_large_records_are_bounded_in_bytes_and_lose_no_row(tmp_path: Path) -> None:
    landing = Landing(tmp_path)
    # 1,000 records of ~3 KB (an order with its items) and 1,000 of a few bytes.
    payloads = [f'{{"id": {i}, "items": "{str(i) * (3000 // len(str(i)))}"}}' for i in range(1000)]
    big = pa.table({"id": [str(i) for i in range(1000)], "payload": payloads})
    large = landing.write("bc", "orders", "2026-09-01", big, version="1")
    small = landing.write("bc", "ids", "2026-09-01", table(1000), version="1")
    slices = list(landing.read_slices(large, 50_000, max_bytes=300_000))
    assert len(slices) >= 10
    assert max(sum(map(len, s["payload"].to_pylist())) for s in slices) <= 300_000
    assert [i for s in slices for i in s["id"].to_pylist()] == [str(i) for i in range(1000)]
    # Small rows stay in one slice: the row limit binds first.
    assert [s.num_rows for s in landing.read_slices(small, 50_000, max_bytes=300_000)] == [1000]

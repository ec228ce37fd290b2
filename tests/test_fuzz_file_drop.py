"""Property tests: no drop file crashes the parser or the normaliser, and every data row
either loads or is quarantined with a reason."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiq_sync.canonical import NormaliseContext
from aiq_sync.landing import Manifest
from connectors.file_drop import FileDropNormaliser, parse_drop_file
from tests.conftest import HEADER, line

CONTEXT = NormaliseContext("drops", "file_drop", "America/Los_Angeles", {"101": "midtown"})
MANIFEST = Manifest(
    manifest_id="m", source="drops", entity="lines", partition_key="f.csv",
    version="1", extracted_at="2026-01-01T00:00:00Z", origin={"file": "f.csv"},
)  # fmt: skip

# Values a POS export really produces, plus arbitrary text.
cell = st.one_of(
    st.just(""),
    st.sampled_from(["2026/09/05", "2026-09-05", "2026/13/45", "15:04:05", "25:99", "n/a"]),
    st.sampled_from(["40.00", "-3", "1,234.50", "12,5x", "$9.99", "(4.25)", "1e5", "0"]),
    st.sampled_from(["9162345678", "1234567890", "8005550123", "+1 604 555 1234"]),
    st.sampled_from(["Jane@Example.com", "bob@", "Smith, Jane", "\u00e9\u00e8", " \t "]),
    st.text(max_size=12),
)
row = st.fixed_dictionaries({h: cell for h in HEADER})


def _csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for r in rows:
        writer.writerow([r[h] for h in HEADER])
    return buffer.getvalue().encode("utf-8")


def _parse(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(data)
        return parse_drop_file(path)


@given(st.lists(row, max_size=25), st.lists(st.just(line()), max_size=3))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_row_loads_or_is_quarantined(rows: list[dict], good: list[dict]) -> None:
    parsed = _parse(_csv(rows + good))
    assert parsed.error is None
    table = parsed.table
    batch = FileDropNormaliser().normalise(table, MANIFEST, CONTEXT)
    quarantined = set(batch.quarantine["line"].to_pylist())
    assert all(batch.quarantine["reason"].to_pylist())  # every rejection says why
    items = batch.tables.get("core.sale_items")
    loaded = set()
    if items is not None:
        loaded = set(zip(items["sale_key"].to_pylist(), items["line_id"].to_pylist(), strict=True))
    for record in table.to_pylist():
        key = (f"drops:{record['transaction_id']}", record["item_id"])
        assert record["_line"] in quarantined or key in loaded, record
    # the good lines appended to every file always load
    for record in good:
        assert ("drops:T1", record["Item ID"]) in loaded


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    parsed = _parse(data)
    assert (parsed.table is None) == (parsed.error is not None)


@given(st.lists(st.text(alphabet=',"\r\n ab1', max_size=30), max_size=15))
@settings(max_examples=200, deadline=None)
def test_broken_quoting_and_ragged_rows_are_rejected_by_line(lines: list[str]) -> None:
    data = (",".join(HEADER) + "\n" + "\n".join(lines)).encode()
    parsed = _parse(data)
    assert parsed.error is None
    rows = parsed.table.num_rows
    rejected = parsed.rejects.num_rows
    assert all(reason for reason in parsed.rejects["reason"].to_pylist())
    assert rows + rejected <= len(data.splitlines())

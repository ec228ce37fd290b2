"""Flat-file drops through landing and loading (no Dagster): the contract, row by row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aiq_sync import warehouse
from aiq_sync.config import AppConfig
from aiq_sync.landing import Landing
from aiq_sync.loader import LoadReport, load_source
from assets.core import normalise_context
from connectors.file_drop import FileDropNormaliser, discover, land_drop_file, parse_drop_file
from tests.conftest import HEADER, line, write_drop


def sync(config: AppConfig) -> LoadReport:
    """Land every file of the `drops` source, then load: what a nightly run does."""
    landing = Landing(config.landing_path)
    for drop in discover(config.resolve("drops")):
        land_drop_file(landing, "drops", drop)
    with warehouse.open_warehouse(config.warehouse_path) as con:
        return load_source(con, landing, FileDropNormaliser(), normalise_context(config, "drops"))


def query(config: AppConfig, sql: str) -> list[tuple]:
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def config(make_config: Callable[..., AppConfig]) -> AppConfig:
    return make_config()


def drops(config: AppConfig) -> Path:
    return config.resolve("drops")


def test_bom_crlf_quoted_commas_and_misspelled_headers_parse(tmp_path: Path) -> None:
    misspelled = [
        {"TransactionID": "TransacitonID", "LocationID": "LocaitonID"}.get(h, h) for h in HEADER
    ]
    row = line(Patient_Name="Smith, Jane", ProductName='Glass Pipe 4", blue')
    row = {{"TransactionID": "TransacitonID", "LocationID": "LocaitonID"}.get(k, k): v
           for k, v in row.items()}  # fmt: skip
    path = write_drop(tmp_path / "a.csv", [row, row], header=misspelled, bom=True, crlf=True)
    parsed = parse_drop_file(path)
    assert parsed.error is None and parsed.rejects.num_rows == 0
    rows = parsed.table.to_pylist()
    assert [r["_line"] for r in rows] == [2, 3]
    assert rows[0]["transaction_id"] == "T1" and rows[0]["location_id"] == "101"
    assert rows[0]["patient_name"] == "Smith, Jane"
    assert rows[0]["product_name"] == 'Glass Pipe 4", blue'


def test_unknown_columns_are_ignored_and_reported(tmp_path: Path) -> None:
    path = write_drop(tmp_path / "a.csv", [line()], header=[*HEADER, "Budtender Name"])
    parsed = parse_drop_file(path)
    assert parsed.table.num_rows == 1 and parsed.unknown_columns == ["Budtender Name"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"   \n\n", "empty file"),
        ("TransactionID,Patient Number\nT1,C1\n".encode("utf-16"), "not UTF-8"),
        ("TransactionID,Patient Number\nT1,Jos\xe9\n".encode("latin-1"), "line 2"),
        (b"Order,Customer,Total\n1,2,3\n", "required column(s) TransactionID, Patient Number"),
    ],
)
def test_unreadable_files_are_rejected_whole(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    parsed = parse_drop_file(path)
    assert parsed.table is None
    assert reason in (parsed.error or "")


def test_header_only_file_is_fine_and_loads_nothing(config: AppConfig) -> None:
    write_drop(drops(config) / "empty.csv", [])
    report = sync(config)
    assert (report.rows_in, report.quarantined, report.unreadable) == (0, 0, [])


# Each bad row is quarantined with its reason; the good row of the same file still loads.
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (line(TransactionID=""), "TransactionID is empty (required)"),
        (line(Patient_Number=""), "Patient Number is empty (required)"),
        (line(Item_ID=""), "Item ID is empty"),
        (line(TransactionDate="2026/13/45"), "TransactionDate '2026/13/45' is not a date"),
        (line(TransactionDate=""), "TransactionDate '' is not a date"),
        (line(Completed_Time="25:99"), "Completed Time '25:99' is not a 24-hour time"),
        (line(InventoryQuantity="two"), "InventoryQuantity 'two' is not a number"),
        (
            line(Agg___Product_Sales_subtotal="12,5x"),
            "Agg - Product Sales (subtotal) '12,5x' is not a number",
        ),
        (line(AllocatedTax="#VALUE!"), "AllocatedTax '#VALUE!' is not a number"),
        (line(Product_Discount="n/a"), "Product Discount 'n/a' is not a number"),
        (line(AllocatedPrice="1.2.3"), "AllocatedPrice '1.2.3' is not a number"),
    ],
)
def test_each_bad_field_quarantines_its_row_only(
    config: AppConfig, bad: dict[str, str], reason: str
) -> None:
    good = line(TransactionID="T9", Item_ID="I9")
    write_drop(drops(config) / "day1.csv", [good, bad])
    report = sync(config)
    assert report.quarantined == 1
    rows = query(config, "SELECT file, line, reason FROM ops.quarantine")
    assert len(rows) == 1
    file, line_no, why = rows[0]
    assert (file, line_no) == ("day1.csv", 3)
    assert why.startswith(reason), why
    assert query(config, "SELECT src_sale_id FROM core.sales") == [("T9",)]


def test_a_row_with_extra_fields_is_quarantined_with_its_physical_line(config: AppConfig) -> None:
    path = write_drop(drops(config) / "day1.csv", [line(), line(TransactionID="T2")])
    text = path.read_text().splitlines()
    text.insert(
        2,
        text[1]
        .replace("Jane Smith", "Smith, Jane")
        .replace('"1 Main St, Apt 2"', "1 Main St, Apt 2"),
    )
    path.write_text("\n".join(text) + "\n")
    sync(config)
    ((line_no, why, raw),) = query(config, "SELECT line, reason, raw FROM ops.quarantine")
    assert line_no == 3
    assert why.startswith("row has 25 fields, header has 23")
    assert "Smith, Jane" in raw
    assert query(config, "SELECT count(*) FROM core.sale_items") == [(2,)]


def test_an_unreadable_file_is_quarantined_whole_and_others_still_load(config: AppConfig) -> None:
    write_drop(drops(config) / "good.csv", [line()])
    (drops(config) / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    report = sync(config)
    assert len(report.unreadable) == 1 and report.unreadable[0].startswith("bad.csv: not UTF-8")
    assert query(config, "SELECT file, line, reason FROM ops.quarantine") == [
        ("bad.csv", None, "whole file rejected: " + report.unreadable[0].removeprefix("bad.csv: "))
    ]
    assert query(config, "SELECT count(*) FROM core.sales") == [(1,)]


def test_a_line_resent_in_a_later_file_counts_once_and_newest_file_wins(
    config: AppConfig,
) -> None:
    first = write_drop(drops(config) / "day1.csv", [line(), line(Item_ID="I2")])
    second = write_drop(
        drops(config) / "day2.csv",
        [line(Item_ID="I2", AllocatedPrice="15.00"), line(TransactionID="T2")],
    )
    import os

    os.utime(first, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.utime(second, ns=(1_000_000_100_000_000_000, 1_000_000_100_000_000_000))
    sync(config)
    items = query(config, "SELECT sale_key, line_id, total FROM core.sale_items ORDER BY 1, 2")
    assert items == [
        ("drops:T1", "I1", Decimal("40.0000")),
        ("drops:T1", "I2", Decimal("15.0000")),  # corrected in the later file
        ("drops:T2", "I1", Decimal("40.0000")),
    ]
    # totals are the sum of every line the sale has, across files: 40 + 15 + tax 8 + 8
    assert query(config, "SELECT total, item_count FROM core.sales WHERE src_sale_id = 'T1'") == [
        (Decimal("71.0000"), 2)
    ]


def test_refunds_are_negative_whatever_sign_the_file_used(config: AppConfig) -> None:
    write_drop(
        drops(config) / "day1.csv",
        [
            line(),
            line(TransactionID="R1", TransactionRefundID="T1", TransactionDate="2026/09/06"),
            line(
                TransactionID="R2",
                InventoryQuantity="-1",
                Agg___Product_Sales_subtotal="-40.00",
                AllocatedPrice="-40.00",
                AllocatedTax="-8.00",
            ),
        ],
    )
    sync(config)
    rows = query(
        config,
        "SELECT src_sale_id, is_refund, status, refunded_sale_id, total FROM core.sales ORDER BY 1",
    )
    assert rows == [
        ("R1", True, "refund", "T1", Decimal("-48.0000")),
        ("R2", True, "refund", None, Decimal("-48.0000")),
        ("T1", False, "completed", None, Decimal("48.0000")),
    ]
    assert query(config, "SELECT quantity FROM core.sale_items WHERE sale_key = 'drops:R1'") == [
        (Decimal("-1.0000"),)
    ]


def test_local_time_becomes_utc_and_the_local_day_is_kept(make_config: Callable) -> None:
    config = make_config(
        sources=[
            {
                "name": "drops",
                "type": "file_drop",
                "location": "drops",
                "timezone": "America/Denver",
            }
        ]
    )
    write_drop(
        drops(config) / "d.csv", [line(TransactionDate="2026/09/05", Completed_Time="23:30:00")]
    )
    sync(config)
    ((sold_at, local_day),) = query(config, "SELECT sold_at, sold_local_date FROM core.sales")
    assert sold_at == datetime(2026, 9, 6, 5, 30, tzinfo=UTC)  # MDT is UTC-6
    assert local_day == date(2026, 9, 5)


def test_personas_are_cleaned_and_blank_fields_keep_known_values(config: AppConfig) -> None:
    write_drop(
        drops(config) / "day1.csv",
        [
            line(Patient_Name="  Smith,  Jane ", Patient_email="Jane@Example.COM"),
            line(
                TransactionID="T2",
                TransactionDate="2026/09/07",
                Patient_email="",
                Patient_Phone_Default="1234567890",
            ),
        ],
    )
    report = sync(config)
    rows = query(
        config,
        "SELECT persona_key, source_type, first_name, last_name, email, phone, birth_date "
        "FROM core.personas",
    )
    # The newest line has no e-mail and an invalid phone: both older valid values are kept.
    assert rows == [
        ("drops:C1", "file_drop", "Jane", "Smith", "jane@example.com", "+19162345678",
         date(1990, 1, 2))
    ]  # fmt: skip
    assert report.notes["invalid_phone"] == 1


def test_locations_map_to_stores_by_id_or_facility_name_and_unmapped_are_listed(
    config: AppConfig,
) -> None:
    write_drop(
        drops(config) / "day1.csv",
        [
            line(TransactionID="T1", LocationID="101"),
            line(TransactionID="T2", LocationID="", Facility_Name="Mission SF"),
            line(TransactionID="T3", LocationID="99", Facility_Name="Popup Kiosk"),
            line(TransactionID="T4", LocationID="99", Facility_Name="Popup Kiosk"),
        ],
    )
    report = sync(config)
    stores = query(config, "SELECT src_sale_id, store_id FROM core.sales ORDER BY 1")
    assert stores == [("T1", "midtown"), ("T2", "mission"), ("T3", None), ("T4", None)]
    assert report.unmapped_locations == 1
    assert query(
        config,
        "SELECT source, location_key, location_name, sales_count FROM ops.unmapped_locations",
    ) == [("drops", "99", "Popup Kiosk", 2)]


def test_relanding_an_unchanged_file_changes_nothing_and_a_changed_one_replaces_it(
    config: AppConfig,
) -> None:
    path = write_drop(drops(config) / "day1.csv", [line(), line(TransactionDate="bad")])
    sync(config)
    tables = ("core.sales", "core.sale_items", "core.personas", "ops.quarantine")

    def snapshot() -> dict[str, list[tuple]]:
        return {t: sorted(map(str, query(config, f"SELECT * EXCLUDE (quarantined_at) FROM {t}")
                              if t == "ops.quarantine" else query(config, f"SELECT * FROM {t}")))
                for t in tables}  # fmt: skip

    before = snapshot()
    assert sync(config).partitions_loaded == 1  # re-landed: a new manifest
    assert snapshot() == before
    write_drop(path, [line()])  # the retailer fixed the bad row by dropping it
    report = sync(config)
    assert report.quarantined == 0
    assert query(config, "SELECT count(*) FROM ops.quarantine") == [(0,)]


def test_blank_cells_are_null_never_the_text_nan(config: AppConfig) -> None:
    # Every optional cell blank, in a file loaded together with a complete one.
    blank = {k: "" for k in line()}
    blank.update({"TransactionID": "T2", "Patient Number": "C2", "Item ID": "I2"})
    blank.update({"TransactionDate": "2026/09/06"})
    write_drop(drops(config) / "a.csv", [line()])
    write_drop(drops(config) / "b.csv", [blank])
    report = sync(config)
    assert report.quarantined == 0
    texts = query(
        config,
        "SELECT count(*) FROM core.personas WHERE 'nan' IN (first_name, last_name, email, phone, "
        "postal_code, address)",
    )
    assert texts == [(0,)]
    assert query(
        config, "SELECT address, postal_code, birth_date FROM core.personas WHERE src_id = 'C2'"
    ) == [(None, None, None)]
    assert query(
        config, "SELECT quantity, total, name FROM core.sale_items WHERE sale_key = 'drops:T2'"
    ) == [(None, None, None)]


def test_negative_amounts_on_a_sale_line_keep_their_sign(config: AppConfig) -> None:
    write_drop(drops(config) / "a.csv", [line(Product_Discount="-2.00", AllocatedPrice="42.00")])
    sync(config)
    assert query(config, "SELECT discount, total FROM core.sale_items") == [
        (Decimal("-2.0000"), Decimal("42.0000"))
    ]


def test_a_store_keyed_by_facility_name_stays_mapped_when_lines_carry_an_unknown_id(
    make_config: Callable[..., AppConfig],
) -> None:
    config = make_config(
        stores=[{"id": "kiosk", "name": "Kiosk", "keys": {"drops": "Popup Kiosk"}}]
    )
    write_drop(drops(config) / "a.csv", [line(LocationID="99", Facility_Name="Popup Kiosk")])
    report = sync(config)
    assert query(config, "SELECT store_id FROM core.sales") == [("kiosk",)]
    assert report.unmapped_locations == 0


def test_the_quarantined_raw_record_is_valid_json_without_blanks(config: AppConfig) -> None:
    import json

    write_drop(drops(config) / "a.csv", [line(TransactionID="", Patient_email="")])
    sync(config)
    ((record_id, raw),) = query(config, "SELECT record_id, raw FROM ops.quarantine")
    assert record_id == "?/I1"
    parsed = json.loads(raw)
    assert parsed["customer_id"] == "C1" and "email" not in parsed


def test_absurd_amounts_are_quarantined_and_the_rest_loads(config: AppConfig) -> None:
    # DECIMAL(18,4) cannot hold the second: before, DuckDB's cast failed the whole load.
    write_drop(
        drops(config) / "a.csv",
        [
            line(),
            line(TransactionID="T2", AllocatedPrice="123456789012345678.99"),
            line(TransactionID="T3", AllocatedTax="-1,000,000,000,000"),
            line(TransactionID="T4", AllocatedPrice="NaN"),
            line(TransactionID="T5", AllocatedPrice="999999999999.99"),  # just in range
        ],
    )
    report = sync(config)
    assert report.quarantined == 3
    assert query(config, "SELECT src_sale_id FROM core.sales ORDER BY 1") == [("T1",), ("T5",)]
    assert query(config, "SELECT record_id, reason FROM ops.quarantine ORDER BY 1") == [
        ("T2/I1", "AllocatedPrice '123456789012345678.99' is out of range "
                  "(at most 12 digits before the decimal point)"),
        ("T3/I1", "AllocatedTax '-1,000,000,000,000' is out of range "
                  "(at most 12 digits before the decimal point)"),
        ("T4/I1", "AllocatedPrice 'NaN' is not a number"),
    ]  # fmt: skip

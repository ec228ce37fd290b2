"""Tests for the deterministic POS flat-file drop generator (examples/generate_drops.py).

The files are re-read here with nothing but the ``csv`` module and checked against the ground
truth the generator recorded while writing them.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pytest

from examples.generate_drops import (
    BAD_DATE,
    BAD_MONEY,
    BAD_REASONS,
    CANONICAL_COLUMNS,
    EXTRA_COLUMNS_REASON,
    MISSING_PATIENT_NUMBER,
    MISSING_TRANSACTION_ID,
    DropReport,
    DropSpec,
    generate,
    main,
)

SMALL = DropSpec(days=12, customers=300, lines_target=2500, bad_lines=15, bad_files=4)
SPELLING = {
    "TransacitonID": "TransactionID",
    "TransacitonRefundID": "TransactionRefundID",
    "LocaitonID": "LocationID",
}
MONEY = (
    "Agg - Product Sales (subtotal)",
    "AllocatedTax",
    "Product Discount",
    "AllocatedPrice",
)
MONEY_RE = re.compile(r"-?\d+\.\d{2}")


def _cents(text: str) -> int:
    negative = text.startswith("-")
    whole, frac = text.lstrip("-").split(".")
    cents = int(whole) * 100 + int(frac)
    return -cents if negative else cents


def _parse_date(text: str) -> date | None:
    for pattern in ("%Y/%m/%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            pass
    return None


def _problem(header: list[str], cells: list[str]) -> str:
    """Classify a row independently of the generator; "" means the row is valid."""
    if len(cells) != len(header):
        return EXTRA_COLUMNS_REASON if len(cells) > len(header) else "too_few_columns"
    row = dict(zip(header, cells, strict=True))
    if not row["TransactionID"]:
        return MISSING_TRANSACTION_ID
    if not row["Patient Number"]:
        return MISSING_PATIENT_NUMBER
    if _parse_date(row["TransactionDate"]) is None:
        return BAD_DATE
    if not all(MONEY_RE.fullmatch(row[c]) for c in MONEY):
        return BAD_MONEY
    if not re.fullmatch(r"-?\d+", row["InventoryQuantity"]):
        return "bad_quantity"
    return ""


@dataclass
class _Drop:
    """What an independent csv read of a drop folder sees."""

    raw: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, list[str]] = field(default_factory=dict)  # canonicalised spelling
    good: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)  # file, line, row
    bad: list[tuple[str, int, str]] = field(default_factory=list)


def _read_drop(directory: Path) -> _Drop:
    drop = _Drop()
    for path in sorted(directory.glob("sales_*.csv")):
        data = path.read_bytes()
        drop.raw[path.name] = data
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = [SPELLING.get(h, h) for h in next(reader)]
        drop.headers[path.name] = header
        assert set(CANONICAL_COLUMNS) <= set(header), path.name
        for cells in reader:
            line = reader.line_num  # no field holds a newline: record line == physical line
            problem = _problem(header, cells)
            if problem:
                drop.bad.append((path.name, line, problem))
            else:
                drop.good.append((path.name, line, dict(zip(header, cells, strict=True))))
    return drop


def _check_report_against_files(report: DropReport, directory: Path) -> _Drop:
    drop = _read_drop(directory)
    assert sorted(drop.raw) == report.files
    assert drop.bad == report.bad_lines
    assert len(drop.good) + len(drop.bad) == report.rows_written

    first_seen: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
    duplicates: Counter[str] = Counter()
    file_index = {name: i for i, name in enumerate(report.files)}
    for name, _, row in drop.good:
        key = (row["TransactionID"], row["Item ID"])
        if key in first_seen:
            first_file, first_row = first_seen[key]
            duplicates[name] += 1
            assert file_index[name] == file_index[first_file] + 1  # re-sent the next day
            assert {c: row[c] for c in CANONICAL_COLUMNS} == {
                c: first_row[c] for c in CANONICAL_COLUMNS
            }
        else:
            first_seen[key] = (name, row)
    unique = [row for _, row in first_seen.values()]

    assert len(unique) == report.good_lines
    assert sum(duplicates.values()) == report.duplicate_lines
    assert dict(duplicates) == report.duplicate_lines_by_file
    refunds = [r for r in unique if r["TransactionRefundID"]]
    assert len(refunds) == report.refund_lines
    assert len(unique) - len(refunds) == report.sale_lines
    assert len({r["TransactionID"] for r in unique}) == report.transactions
    assert len({r["TransactionID"] for r in refunds}) == report.refund_transactions
    negative = {r["TransactionID"] for r in refunds if int(r["InventoryQuantity"]) < 0}
    assert len(negative) == report.negative_quantity_refund_transactions
    customers = {r["Patient Number"] for r in unique}
    assert len(customers) == report.customers_with_sales
    assert sorted(customers) == sorted(report.phone_kind_by_customer)

    lines_per_location = Counter(r["LocationID"] for r in unique)
    assert dict(lines_per_location) == report.lines_per_location
    txns_per_location = Counter(
        loc for loc, _ in {(r["LocationID"], r["TransactionID"]) for r in unique}
    )
    assert dict(txns_per_location) == report.transactions_per_location
    names = {(r["LocationID"], r["Facility Name"]) for r in unique}
    assert all(report.location_names[loc] == name for loc, name in names)
    seen_unmapped = sorted(set(lines_per_location) - set(report.mapped_location_ids))
    assert seen_unmapped == report.unmapped_location_ids

    stores: dict[str, set[str]] = {}
    for r in unique:
        stores.setdefault(r["Patient Number"], set()).add(r["LocationID"])
    assert sum(1 for s in stores.values() if len(s) > 1) == report.multi_store_customers

    sales_cents = sum(_cents(r["AllocatedPrice"]) for r in unique if not r["TransactionRefundID"])
    refund_cents = sum(abs(_cents(r["AllocatedPrice"])) for r in refunds)
    assert sales_cents == report.sales_allocated_price_cents
    assert refund_cents == report.refund_allocated_price_cents

    last_sale: dict[str, date] = {}
    for r in unique:
        if not r["TransactionRefundID"]:
            day = _parse_date(r["TransactionDate"])
            assert day is not None
            last_sale[r["Patient Number"]] = max(day, last_sale.get(r["Patient Number"], day))
    assert last_sale == report.last_sale_date_by_customer

    # refunds point at a sale written in an earlier file, for items of that sale
    sale_items: dict[str, tuple[int, set[str]]] = {}
    for key, (name, row) in first_seen.items():
        if not row["TransactionRefundID"]:
            entry = sale_items.setdefault(key[0], (file_index[name], set()))
            entry[1].add(key[1])
    for key, (name, row) in first_seen.items():
        if row["TransactionRefundID"]:
            original_file, items = sale_items[row["TransactionRefundID"]]
            assert original_file < file_index[name]
            assert key[1] in items
    assert sorted({r["TransactionRefundID"] for r in refunds}) == sorted(
        report.refunded_transaction_ids
    )

    # money is consistent: price = subtotal - discount, tax 10-25 % of price
    for r in unique:
        subtotal, discount = (
            _cents(r["Agg - Product Sales (subtotal)"]),
            _cents(r["Product Discount"]),
        )
        price, tax = _cents(r["AllocatedPrice"]), _cents(r["AllocatedTax"])
        assert price == subtotal - discount
        assert abs(price) > 0
        assert 0.10 * abs(price) - 1 <= abs(tax) <= 0.25 * abs(price) + 1
    return drop


def _check_formats(report: DropReport, drop: _Drop) -> None:
    canonical = set(CANONICAL_COLUMNS)
    bom = [n for n, data in drop.raw.items() if data.startswith(b"\xef\xbb\xbf")]
    crlf = [n for n, data in drop.raw.items() if b"\r\n" in data]
    assert all(
        data.count(b"\n") == data.count(b"\r\n") for n, data in drop.raw.items() if n in crlf
    )
    misspelled = [n for n, data in drop.raw.items() if b"TransacitonID" in data.split(b"\n")[0]]
    extra = [n for n, h in drop.headers.items() if set(h) - canonical]
    reordered = [
        n
        for n, h in drop.headers.items()
        if tuple(c for c in h if c in canonical) != CANONICAL_COLUMNS
    ]
    assert bom == report.files_with_bom
    assert crlf == report.files_with_crlf
    assert misspelled == report.files_with_misspelled_headers
    assert extra == report.files_with_extra_columns
    assert reordered == report.files_with_reordered_columns
    first_rows: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()
    for name, _, row in drop.good:
        key = (row["TransactionID"], row["Item ID"])
        if key not in seen:  # re-sent rows keep the date format of the file they came from
            seen.add(key)
            first_rows.setdefault(name, set()).add("-" if "-" in row["TransactionDate"] else "/")
    iso = [n for n, formats in first_rows.items() if formats == {"-"}]
    assert iso == report.files_with_iso_dates
    for hazard in (bom, crlf, misspelled, extra, reordered, iso):
        assert hazard, "every format hazard appears at least once"
        assert len(hazard) < len(report.files), "and not everywhere"


@pytest.fixture(scope="module")
def small_drop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DropReport]:
    out = tmp_path_factory.mktemp("drops")
    return out, generate(out, SMALL)


def test_generation_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", SMALL)
    second = generate(tmp_path / "b", SMALL)
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    files_b = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files_a == files_b == first.files
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    first.out_dir = second.out_dir = ""
    assert first == second


def test_another_seed_gives_another_drop(tmp_path: Path) -> None:
    spec = DropSpec(days=3, customers=50, lines_target=300)
    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", DropSpec(days=3, customers=50, lines_target=300, seed=8))
    name = "sales_2026-10-31.csv"
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_rewrite_is_idempotent_and_drops_stale_files(tmp_path: Path) -> None:
    spec = DropSpec(days=4, customers=60, lines_target=400)
    generate(tmp_path, spec)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "sales_2001-01-01.csv").write_text("stale\n")
    (tmp_path / "notes.txt").write_text("keep me\n")
    generate(tmp_path, spec)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "notes.txt"}
    assert after == before
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_agrees_with_an_independent_csv_read(small_drop: tuple[Path, DropReport]) -> None:
    out, report = small_drop
    drop = _check_report_against_files(report, out)
    _check_formats(report, drop)
    assert report.files == [f"sales_2026-10-{d:02d}.csv" for d in range(20, 32)]
    assert (report.first_date, report.last_date) == (date(2026, 10, 20), date(2026, 10, 31))


def test_bad_lines_cover_every_reason_over_a_few_files(
    small_drop: tuple[Path, DropReport],
) -> None:
    _, report = small_drop
    assert len(report.bad_lines) == SMALL.bad_lines
    assert {reason for _, _, reason in report.bad_lines} == set(BAD_REASONS)
    assert len({name for name, _, _ in report.bad_lines}) == SMALL.bad_files
    # BOM and CRLF files carry bad rows too, so their line numbers are exercised
    bad_files = {name for name, _, _ in report.bad_lines}
    assert bad_files & set(report.files_with_bom)
    assert bad_files & set(report.files_with_crlf)
    assert all(line >= 2 for _, line, _ in report.bad_lines)


def test_customers_pii_variety(small_drop: tuple[Path, DropReport]) -> None:
    out, report = small_drop
    drop = _read_drop(out)
    rows = {row["Patient Number"]: row for _, _, row in drop.good}
    assert any("," in r["Patient Name"] for r in rows.values())
    assert any('"' in r["Patient Name"] for r in rows.values()) or any(
        '"' in r["ProductName"] for r in rows.values()
    )
    assert any("," in r["Patient Address"] for r in rows.values())
    assert any(r["Patient Address"] == "" for r in rows.values())
    assert any(not r["Patient Name"].isascii() for r in rows.values())
    assert all(
        r["Patient Age"] == "" or re.fullmatch(r"\d{4}/\d{2}/\d{2}", r["Patient Age"])
        for r in rows.values()
    )
    assert all(re.fullmatch(r"\d*", r["Patient Phone Default"]) for r in rows.values())
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", r["Completed Time"]) for _, _, r in drop.good)
    kinds = Counter(report.phone_kind_by_customer.values())
    assert kinds["us"] > len(rows) * 0.6
    assert {"blank", "invalid", "canada"} <= set(kinds)
    emails = Counter(report.email_kind_by_customer.values())
    assert {"valid", "mixed_case", "blank", "invalid"} <= set(emails)
    assert report.under_21_customers_with_sales >= 1
    assert report.alias_patient_numbers
    for alias, original in report.alias_patient_numbers.items():
        if alias in rows and original in rows:
            assert rows[alias]["Patient Phone Default"] == rows[original]["Patient Phone Default"]
            assert rows[alias]["Patient email"] == rows[original]["Patient email"]


def test_phone_and_email_kinds_match_the_validators(tmp_path: Path) -> None:
    phonenumbers = pytest.importorskip("phonenumbers")
    email_validator = pytest.importorskip("email_validator")
    report = generate(tmp_path, DropSpec(days=5, customers=1500, lines_target=3000))
    drop = _read_drop(tmp_path)
    rows = {row["Patient Number"]: row for _, _, row in drop.good}
    assert set(Counter(report.phone_kind_by_customer.values())) == {
        "us",
        "us_leading_1",
        "canada",
        "toll_free",
        "invalid",
        "blank",
    }
    for number, kind in report.phone_kind_by_customer.items():
        phone = rows[number]["Patient Phone Default"]
        if kind == "blank":
            assert phone == ""
            continue
        parsed = phonenumbers.parse(phone, "US")
        valid = phonenumbers.is_valid_number(parsed)
        assert valid == (kind != "invalid"), (phone, kind)
        if kind != "toll_free":
            assert not re.fullmatch(r"\d{3}55501\d\d", phone[-10:]), "no fictional 555-01xx"
        if kind == "canada":
            assert phonenumbers.region_code_for_number(parsed) == "CA"
        elif kind in ("us", "us_leading_1"):
            assert phonenumbers.region_code_for_number(parsed) == "US"
        if kind == "toll_free":
            number_type = phonenumbers.number_type(parsed)
            assert number_type == phonenumbers.PhoneNumberType.TOLL_FREE
    for number, kind in report.email_kind_by_customer.items():
        email = rows[number]["Patient email"]
        if kind == "blank":
            assert email == ""
            continue
        try:
            email_validator.validate_email(email, check_deliverability=False)
            ok = True
        except email_validator.EmailNotValidError:
            ok = False
        assert ok == (kind != "invalid"), (email, kind)
        assert (email != email.lower()) == (kind == "mixed_case"), (email, kind)


def test_demo_size_defaults_meet_the_minimums(tmp_path: Path) -> None:
    started = time.perf_counter()
    report = generate(tmp_path, DropSpec())
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"generation took {elapsed:.2f}s"
    assert len(report.files) == 90
    assert len(report.mapped_location_ids) >= 3
    assert set(report.mapped_location_ids) <= set(report.lines_per_location)
    assert len(report.unmapped_location_ids) >= 1
    assert 1 <= report.transactions_per_location[report.unmapped_location_ids[0]] <= 20
    assert report.customers_with_sales >= 2000
    assert report.customers_total > report.customers_with_sales  # some never buy
    assert report.good_lines >= 20000
    assert report.duplicate_lines > 0
    assert 0.01 <= report.duplicate_lines / report.good_lines <= 0.03
    assert 12 <= len(report.bad_lines) <= 60
    assert 0.01 <= report.refund_transactions / report.transactions <= 0.05
    assert 0 < report.negative_quantity_refund_transactions < report.refund_transactions
    assert report.multi_store_customers > 0
    _check_formats(report, _check_report_against_files(report, tmp_path))


def test_main_writes_and_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--out", str(tmp_path), "--days", "3", "--customers", "40", "--lines", "200"]
    assert main([*argv, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "3 files" in out
    assert sorted(p.name for p in tmp_path.glob("sales_*.csv")) == [
        "sales_2026-10-29.csv",
        "sales_2026-10-30.csv",
        "sales_2026-10-31.csv",
    ]


def test_invalid_spec_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, DropSpec(days=0))
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--lines", "0"])

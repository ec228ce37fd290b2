"""SQL sources against real SQLite files: config, windows, cursor formats, mapping, errors,
and the whole path through Dagster into DuckDB (PostgreSQL: test_sql_postgres.py)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from aiq_sync import warehouse
from aiq_sync.config import SQL_LINE_FIELDS, ConfigError, SqlSource, parse_config
from aiq_sync.extract import Window, day_window
from aiq_sync.landing import Landing
from assets.api_source import ASSET_PARTITION_RANGE_END as RANGE_END
from assets.api_source import ASSET_PARTITION_RANGE_START as RANGE_START
from assets.factory import build_parts
from assets.runner import run_sync
from connectors.file_drop.reader import COLUMNS
from connectors.sql import SqlLinesExtractor, SqlSourceError, check, land_sql_days
from connectors.sql.database import Database

TZ = "America/Denver"

MAPPING = {
    "transaction_id": "txn",
    "item_id": "line_no",
    "customer_id": "customer",
    "location_id": "store",
    "product_name": "product",
    "quantity": "qty",
    "subtotal": "amount",
    "tax": "tax",
    "email": "email",
    "phone": "phone",
    "refund_of": "refund_of",
}
START = datetime(2026, 3, 1, 8, 0)  # local (America/Denver) times in the table


def make_db(path: Path, rows: int = 60, *, fmt: str = "%Y-%m-%d %H:%M:%S", step_min=60) -> Path:
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE sale_lines (txn TEXT, line_no INTEGER, customer TEXT, store TEXT, "
        "product TEXT, qty INTEGER, amount NUMERIC, tax REAL, email TEXT, phone TEXT, "
        "refund_of TEXT, sold TEXT)"
    )
    con.executemany(
        "INSERT INTO sale_lines VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                f"T{i // 2}",
                i % 2 + 1,
                f"C{i % 5}",
                "101",
                f"Product {i % 4}",
                1,
                "10.00",
                0.8,
                f"c{i % 5}@example.com",
                "9162345678",
                None,
                (START + timedelta(minutes=step_min * i)).strftime(fmt),
            )
            for i in range(rows)
        ],
    )
    con.commit()
    con.close()
    return path


def sql_source(**entity: object) -> SqlSource:
    spec = {"table": "sale_lines", "cursor": "sold", "columns": MAPPING, **entity}
    raw = {"name": "pos", "type": "sql", "url_env": "POS_URL", "timezone": "America/Denver",
           "entities": {"lines": spec}}  # fmt: skip
    source = parse_config({"sources": [raw]}).sources[0]
    assert isinstance(source, SqlSource)
    return source


def window(first: date, days: int, tz: str = TZ) -> Window:
    return Window(day_window(first, tz).start, day_window(first + timedelta(days - 1), tz).end)


def extract_all(source: SqlSource, url: str, w: Window) -> tuple[list, list[dict], dict]:
    """(batch sizes, rows as dicts with their local `day`, stats)"""
    db = Database(source, {"POS_URL": url})
    try:
        extractor = SqlLinesExtractor(source, source.entities["lines"], db, TZ)
        sizes, rows = [], []
        for batch, days in extractor.batches(w):
            sizes.append(batch.num_rows)
            rows += [{**row, "day": day} for row, day in zip(batch.to_pylist(), days, strict=True)]
        return sizes, rows, extractor.request_stats()
    finally:
        db.close()


def test_every_flat_file_field_can_be_mapped() -> None:
    assert set(SQL_LINE_FIELDS) == set(COLUMNS) | {"sold_at"}


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        ({"columns": {"transaction_id": "a"}}, "required field(s) customer_id, item_id not mapped"),
        ({"columns": {**MAPPING, "colour": "c"}}, "unknown field(s) colour"),
        ({"query": "SELECT 1"}, "give exactly one of table or query"),
        ({"columns": {**MAPPING, "sold_at": "s", "transaction_date": "d"}}, "not both"),
        ({"cursor_timezone": "Mars/Base"}, "unknown time zone"),
    ],
)
def test_config_mistakes_name_their_field(entity: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sql_source(**entity)
    assert any(expected in p and p.startswith("sources[pos].entities.lines") for p in
               caught.value.problems), caught.value.problems  # fmt: skip
    with pytest.raises(ConfigError, match="unknown entity customers; supported: lines"):
        parse_config({"sources": [{"name": "pos", "type": "sql", "url_env": "U",
                                   "entities": {"customers": {}}}]})  # fmt: skip
    with pytest.raises(ConfigError, match="url_env must name an environment variable"):
        parse_config({"sources": [{"name": "pos", "type": "sql", "url_env": "sqlite:///x.db",
                                   "entities": {}}]})  # fmt: skip


def test_a_window_reads_only_its_rows_in_bounded_batches(tmp_path: Path) -> None:
    url = f"sqlite:///{make_db(tmp_path / 'pos.db', rows=500, step_min=10)}"
    source = sql_source().model_copy(update={"batch_rows": 100})
    sizes, rows, stats = extract_all(source, url, window(date(2026, 3, 2), 1))
    # 08:00 + 10 min steps: March 2 (local) holds rows 96..239
    assert len(rows) == 144 and sizes == [100, 44]
    assert stats["batches"] == 2 and stats["requests"] == 2  # probe + one streamed query
    assert {r["day"] for r in rows} == {date(2026, 3, 2)}
    assert [r["_line"] for r in rows] == list(range(1, 145))
    first = rows[0]
    assert (first["transaction_date"], first["completed_time"]) == ("2026-03-02", "00:00:00")
    assert first["subtotal"] == "10" and first["tax"] == "0.8" and first["refund_of"] is None
    assert (first["transaction_id"], first["item_id"]) == ("T48", "1")  # SQLite NUMERIC: 10


@pytest.mark.parametrize(
    ("fmt", "extra", "expected"),
    [
        ("%Y-%m-%dT%H:%M:%S", {}, 24),  # local text, 'T'
        ("%Y-%m-%dT%H:%M:%SZ", {}, 24),  # UTC text: the day is the Denver day
        ("%Y-%m-%d", {}, None),  # date-only text
    ],
)
def test_text_cursors_compare_in_their_own_format(
    tmp_path: Path, fmt: str, extra: dict, expected: int | None
) -> None:
    url = f"sqlite:///{make_db(tmp_path / 'pos.db', rows=96, fmt=fmt)}"
    _, rows, _ = extract_all(sql_source(**extra), url, window(date(2026, 3, 2), 1))
    if expected is None:  # one row per hour but only dates: the 24 rows dated March 2
        assert {(r["transaction_date"], r["completed_time"]) for r in rows} == {
            ("2026-03-02", None)
        }
        assert len(rows) == 24
        return
    assert len(rows) == expected
    assert {r["day"] for r in rows} == {date(2026, 3, 2)}


def test_naive_times_are_read_in_cursor_timezone_and_offsets_are_refused(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{make_db(tmp_path / 'pos.db', rows=96)}"
    # The same stored times read as UTC: March 2 in Denver is 07:00Z..07:00Z (rows 23..46).
    _, rows, _ = extract_all(sql_source(cursor_timezone="UTC"), url, window(date(2026, 3, 2), 1))
    assert len(rows) == 24 and rows[0]["completed_time"] == "00:00:00"
    url2 = f"sqlite:///{make_db(tmp_path / 'p2.db', rows=4, fmt='%Y-%m-%dT%H:%M:%S-07:00')}"
    with pytest.raises(SqlSourceError, match="text times with a UTC offset"):
        extract_all(sql_source(), url2, window(date(2026, 3, 1), 1))


def test_a_query_with_flat_file_style_date_and_time_columns(tmp_path: Path) -> None:
    db = make_db(tmp_path / "pos.db", rows=10)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE stores (code TEXT, name TEXT)")
    con.execute("INSERT INTO stores VALUES ('101', 'Midtown')")
    con.commit()
    con.close()
    query = """
        SELECT l.*, s.name AS store_name, substr(l.sold, 1, 10) AS day,
               substr(l.sold, 12, 8) AS at
        FROM sale_lines l JOIN stores s ON s.code = l.store;
    """
    columns = {**MAPPING, "facility_name": "store_name", "transaction_date": "day",
               "completed_time": "at"}  # fmt: skip
    _, rows, _ = extract_all(
        sql_source(table=None, query=query, columns=columns),
        f"sqlite:///{db}",
        window(date(2026, 3, 1), 1),
    )
    first = rows[0]
    assert first["facility_name"] == "Midtown" and len(rows) == 10
    assert (first["transaction_date"], first["completed_time"]) == ("2026-03-01", "08:00:00")


def test_errors_name_the_entity_and_never_echo_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{make_db(tmp_path / 'pos.db', rows=4)}"
    with pytest.raises(SqlSourceError, match=r"entities.lines: query failed: no such table: nope"):
        extract_all(sql_source(table="nope"), url, window(date(2026, 3, 1), 1))
    with pytest.raises(SqlSourceError, match=r"no such column: sale_lines\.colour"):
        extract_all(sql_source(cursor="colour"), url, window(date(2026, 3, 1), 1))
    with pytest.raises(SqlSourceError, match="environment variable POS_URL is not set"):
        Database(sql_source(), {})
    pasted = "mssql+odbc-not-a-url:://user:Pa55w0rd@host"
    with pytest.raises(SqlSourceError) as caught:
        Database(sql_source(), {"POS_URL": pasted})
    assert "does not hold a SQLAlchemy URL" in str(caught.value)
    assert "Pa55w0rd" not in str(caught.value)


def test_check_reports_problems_before_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{make_db(tmp_path / 'pos.db', rows=4)}"
    monkeypatch.setenv("POS_URL", url)
    assert check(sql_source(), TZ) == []
    problems = check(sql_source(columns={**MAPPING, "email": "mail"}), TZ)
    assert problems == [
        "sources[pos].entities.lines: query failed: no such column: sale_lines.mail"
    ]
    monkeypatch.delenv("POS_URL")
    assert "POS_URL is not set" in check(sql_source(), TZ)[0]
    frozen = sql_source().model_copy(update={"freeze": True})
    assert check(frozen, TZ) == []  # not contacted


def test_land_days_routes_rows_to_their_local_day_with_look_back(tmp_path: Path) -> None:
    url = f"sqlite:///{make_db(tmp_path / 'pos.db', rows=96)}"
    source = sql_source()
    landing = Landing(tmp_path / "landing")
    db = Database(source, {"POS_URL": url})
    try:
        extractor = SqlLinesExtractor(source, source.entities["lines"], db, TZ)
        days = [date(2026, 3, 2) + timedelta(days=n) for n in range(5)]
        manifests = land_sql_days(landing, "pos", extractor, days, TZ, 1)
    finally:
        db.close()
    # March 1 (look-back, 16 rows from 08:00) lands in the first day with March 2's 24;
    # Rows run out at 07:00 on March 5; March 6 still gets its (empty) partition.
    assert [m.rows for m in manifests] == [16 + 24, 24, 24, 8, 0]
    assert [m.requests for m in manifests] == [2, 0, 0, 0, 0]
    assert manifests[0].origin["file"] == "sale_lines"
    assert [m.partition_key for m in landing.manifests("pos", "lines")] == [
        d.isoformat() for d in days
    ]


@pytest.fixture
def sql_config(
    tmp_path: Path, make_config: Callable, monkeypatch: pytest.MonkeyPatch
) -> tuple[object, Path]:
    db = make_db(tmp_path / "pos.db", rows=120)
    monkeypatch.setenv("POS_URL", f"sqlite:///{db}")
    config = make_config(
        stores=[{"id": "midtown", "name": "Midtown", "keys": {"pos": "101"}}],
        sources=[
            {
                "name": "pos",
                "type": "sql",
                "url_env": "POS_URL",
                "timezone": "America/Denver",
                "start_date": "2026-03-01",
                "entities": {
                    "lines": {"table": "sale_lines", "cursor": "sold", "columns": MAPPING}
                },
            }
        ],
    )
    return config, db


@pytest.mark.e2e
def test_run_loads_sql_lines_into_the_canonical_tables_idempotently(
    sql_config: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config, db = sql_config
    con = sqlite3.connect(db)
    con.execute("UPDATE sale_lines SET qty = -1, refund_of = 'T0' WHERE txn = 'T3'")
    con.execute("UPDATE sale_lines SET amount = 'ten' WHERE txn = 'T4' AND line_no = 1")
    con.commit()
    con.close()
    instance = dg.DagsterInstance.ephemeral()
    out: list[str] = []
    span = {"start": date(2026, 3, 1), "end": date(2026, 3, 6)}
    assert run_sync(config, instance=instance, out=out.append, **span).ok, out

    def snapshot() -> list:
        with warehouse.open_warehouse(config.warehouse_path, read_only=True) as w:
            return [
                w.execute("SELECT count(*), sum(total) FROM core.sales").fetchall(),
                w.execute("SELECT count(*) FROM core.sale_items").fetchall(),
                w.execute(
                    "SELECT source_type, count(*), count(phone) FROM core.personas GROUP BY 1"
                ).fetchall(),
                w.execute(
                    "SELECT is_refund, total FROM core.sales WHERE src_sale_id = 'T3'"
                ).fetchall(),
                w.execute("SELECT partition_key, record_id, reason FROM ops.quarantine").fetchall(),
                w.execute("SELECT store_id, count(*) FROM core.sales GROUP BY 1").fetchall(),
            ]

    first = snapshot()
    assert first[1] == [(119,)] and first[2] == [("sql", 5, 5)]
    assert first[3] == [(True, -21.6)] or float(first[3][0][1]) == -21.6
    assert first[4] == [
        ("2026-03-01", "T4/1", "Agg - Product Sales (subtotal) 'ten' is not a number")
    ]
    assert first[5] == [("midtown", 60)]
    assert run_sync(config, instance=instance, out=out.append, **span).ok
    assert snapshot() == first  # re-landing the same rows changes nothing

    secret_free = "\n".join(out) + caplog.text
    assert str(db) not in secret_free  # the URL (here: the file path) is never logged


def test_nightly_schedule_runs_from_the_watermark_to_today(sql_config: tuple) -> None:
    """The nightly run back-fills from the last landed day (after an outage or a freeze) and
    is one range run; a frozen source is skipped without a connection."""
    config, _ = sql_config
    (nightly,) = [s for s in build_parts(config).schedules if s.name == "pos_nightly"]
    at = datetime(2026, 3, 10, 3, 0, tzinfo=ZoneInfo("America/Los_Angeles"))

    def evaluate() -> dg.RunRequest:
        context = dg.build_schedule_context(scheduled_execution_time=at)
        (request,) = nightly.evaluate_tick(context).run_requests or []
        return request

    first = evaluate()  # nothing landed yet: everything since start_date, up to today
    assert (first.tags[RANGE_START], first.tags[RANGE_END]) == ("2026-03-01", "2026-03-10")
    span = {"start": date(2026, 3, 1), "end": date(2026, 3, 6)}
    assert run_sync(config, instance=dg.DagsterInstance.ephemeral(), out=lambda _: None, **span).ok
    after_outage = evaluate()  # the last landed day (maybe partial) onwards
    assert (after_outage.tags[RANGE_START], after_outage.tags[RANGE_END]) == (
        "2026-03-06",
        "2026-03-10",
    )
    assert after_outage.run_key == "2026-03-06..2026-03-10"

    source = config.sources[0].model_copy(update={"freeze": True})
    frozen = config.model_copy(update={"sources": [source]})
    (frozen_nightly,) = [s for s in build_parts(frozen).schedules if s.name == "pos_nightly"]
    tick = frozen_nightly.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at))
    assert not tick.run_requests and "frozen" in (tick.skip_message or "")

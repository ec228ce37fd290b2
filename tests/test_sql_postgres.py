"""SQL sources against a real PostgreSQL server started for this module (initdb + pg_ctl on a
free loopback port, password authentication). Skipped, with the reason, when the server
binaries or the psycopg driver are not installed.

Server binaries: `pg_ctl`/`initdb` on PATH, else /usr/lib/postgresql/<version>/bin (Debian's
`postgresql` package). As root the server runs as the `postgres` user via `runuser`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_sync import warehouse
from aiq_sync.config import SqlSource, parse_config
from aiq_sync.extract import Window, day_window
from assets.runner import run_sync
from connectors.sql import SqlLinesExtractor, SqlSourceError
from connectors.sql.database import Database


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server not installed (initdb/pg_ctl; Debian: postgresql)")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg (v3) driver not installed")
    base = Path(tempfile.mkdtemp(prefix="aiq-pg-"))  # /tmp: reachable by the postgres user
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    password = "pg-Pa55~" + secrets.token_hex(6)
    pwfile = base / "pw"
    pwfile.write_text(password)
    if prefix:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    data, port = base / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    run(initdb, "-D", str(data), "-U", "aiq", "--auth=scram-sha-256", f"--pwfile={pwfile}",
        "-E", "UTF8", "--no-sync")  # fmt: skip
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", str(data), "-l", str(base / "log"), "-o", options, "-w", "start")
    try:
        yield f"postgresql+psycopg://aiq:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


MAPPING = {
    "transaction_id": "txn_id",
    "item_id": "line_no",
    "customer_id": "customer_no",
    "location_id": "store_code",
    "product_name": "product",
    "quantity": "qty",
    "subtotal": "amount",
    "tax": "tax",
    "phone": "phone",
    "sold_at": "sold_at",
}


@pytest.fixture(scope="module")
def pg_tables(pg_url: str) -> str:
    engine = sa.create_engine(pg_url)
    with engine.begin() as con:
        con.execute(sa.text("""
            CREATE TABLE pos_lines (
                txn_id text, line_no int, customer_no text, store_code text, product text,
                qty numeric(10,3), amount numeric(12,2), tax numeric(12,2), phone text,
                sold_at timestamptz, updated_at timestamp
            );
            INSERT INTO pos_lines
            SELECT 'T' || (g / 3), g % 3 + 1, 'C' || (g % 40), '101', 'Product ' || (g % 9),
                   1, 12.34, 1.02, '9162345678',
                   timestamptz '2026-03-01 00:00:00-07' + g * interval '7 minutes',
                   timestamp '2026-03-01 00:00:00' + g * interval '7 minutes'
            FROM generate_series(0, 2999) AS g;
        """))  # fmt: skip
    engine.dispose()
    return pg_url


def pg_source(**entity: object) -> SqlSource:
    spec = {"table": "pos_lines", "cursor": "sold_at", "columns": MAPPING, **entity}
    source = parse_config(
        {
            "sources": [
                {
                    "name": "pos",
                    "type": "sql",
                    "url_env": "PG_URL",
                    "timezone": "America/Denver",
                    "batch_rows": 500,
                    "entities": {"lines": spec},
                }
            ]
        }
    ).sources[0]
    assert isinstance(source, SqlSource)
    return source


TZ = "America/Denver"


def one_day(day: date) -> Window:
    return day_window(day, TZ)


def test_timestamptz_and_timestamp_cursors_select_the_same_local_day(pg_tables: str) -> None:
    for cursor, extra in (("sold_at", {}), ("updated_at", {"cursor_timezone": "America/Denver"})):
        source = pg_source(cursor=cursor, **extra)
        db = Database(source, {"PG_URL": pg_tables})
        try:
            extractor = SqlLinesExtractor(source, source.entities["lines"], db, TZ)
            rows = [
                row
                for batch, _ in extractor.batches(one_day(date(2026, 3, 2)))
                for row in batch.to_pylist()
            ]
        finally:
            db.close()
        # 7-minute steps from midnight March 1 (MST): March 2 holds rows 206..411.
        assert len(rows) == 206, cursor
        first = rows[0]
        assert (first["transaction_date"], first["completed_time"]) == ("2026-03-02", "00:02:00")
        assert (first["subtotal"], first["quantity"]) == ("12.34", "1.000")


def test_batches_come_from_a_server_side_cursor(pg_tables: str) -> None:
    source = pg_source()
    db = Database(source, {"PG_URL": pg_tables})
    watcher = sa.create_engine(pg_tables)
    try:
        extractor = SqlLinesExtractor(source, source.entities["lines"], db, TZ)
        pages = (batch for batch, _ in extractor.batches(Window(one_day(date(2026, 3, 1)).start,
                                         one_day(date(2026, 3, 10)).end)))  # fmt: skip
        first = next(pages)
        with watcher.connect() as con:  # while we hold page 1, the server holds the rest
            cursors = con.execute(sa.text(
                "SELECT query FROM pg_stat_activity WHERE query ILIKE 'FETCH FORWARD%'"
            )).scalars().all()  # fmt: skip
        rest = [page.num_rows for page in pages]
    finally:
        watcher.dispose()
        db.close()
    assert first.num_rows == 500 and cursors  # e.g. FETCH FORWARD 499 FROM "c_..."
    assert sum(rest) + len(first) == 2049 and max(rest) <= 500  # 10 local days, one 23 h


def test_a_wrong_password_or_dead_server_is_explained_without_the_password(
    pg_tables: str,
) -> None:
    source = pg_source()
    real = sa.engine.make_url(pg_tables)
    wrong = real.set(password="Not-The~Pass").render_as_string(hide_password=False)
    for url, expected in (
        (wrong, "password authentication failed"),
        (real.set(port=free_port()).render_as_string(hide_password=False), "cannot connect"),
    ):
        db = Database(source, {"PG_URL": url})
        try:
            with pytest.raises(SqlSourceError) as caught:
                list(SqlLinesExtractor(source, source.entities["lines"], db, TZ).batches(
                    one_day(date(2026, 3, 2))))  # fmt: skip
        finally:
            db.close()
        message = str(caught.value)
        assert expected in message, message
        assert "Not-The~Pass" not in message and str(real.password) not in message
        assert "aiq:***@127.0.0.1" in message or "password authentication" in message


def test_a_plain_postgresql_url_uses_psycopg(pg_tables: str) -> None:
    plain = pg_tables.replace("postgresql+psycopg://", "postgresql://")
    db = Database(pg_source(), {"PG_URL": plain})
    try:
        assert db.engine.url.drivername == "postgresql+psycopg"
        with db.connect() as con:
            assert con.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        db.close()


@pytest.mark.e2e
def test_run_from_postgresql_into_duckdb_never_stores_the_url(
    pg_tables: str,
    make_config: Callable,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    monkeypatch.setenv("PG_URL", pg_tables)
    password = str(sa.engine.make_url(pg_tables).password)
    config = make_config(
        stores=[{"id": "midtown", "name": "Midtown", "keys": {"pos": "101"}}],
        sources=[{"name": "pos", "type": "sql", "url_env": "PG_URL",
                  "timezone": "America/Denver", "start_date": "2026-03-01",
                  "entities": {"lines": {"table": "pos_lines", "cursor": "sold_at",
                                         "columns": MAPPING}}}],
    )  # fmt: skip
    out: list[str] = []
    last = date(2026, 3, 1) + timedelta(days=14)
    outcome = run_sync(config, start=date(2026, 3, 1), end=last, out=out.append,
                       instance=dg.DagsterInstance.ephemeral())  # fmt: skip
    assert outcome.ok, outcome.failures
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        items, sales, total = con.execute(
            "SELECT (SELECT count(*) FROM core.sale_items), count(*), sum(total) FROM core.sales"
        ).fetchone()
    assert (items, sales) == (3000, 1000)
    assert float(total) == pytest.approx(3000 * (12.34 + 1.02))
    for path in config.landing_path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes()
    assert password.encode() not in config.warehouse_path.read_bytes()
    assert password not in "\n".join(out) + caplog.text

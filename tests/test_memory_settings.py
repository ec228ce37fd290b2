"""The warehouse's DuckDB resources: a bounded memory limit by default, the config's
`duckdb` section applied to real connections, and loads bigger than the limit completing by
spilling to the temp directory (bench: aiq_sync.bench.sql_memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from aiq_sync import warehouse
from aiq_sync.canonical import NATURAL_KEYS, PERSONA_STICKY
from aiq_sync.config import ConfigError, DuckDBSettings, parse_config
from aiq_sync.identity import resolve_contacts


def settings(con: warehouse.Connection) -> tuple:
    return con.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads'), "
        "current_setting('temp_directory')"
    ).fetchone()


def shown(size: str) -> str:
    """How DuckDB displays a memory limit (e.g. 128MB -> '122.0 MiB')."""
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{size}'")
        return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    finally:
        con.close()


def test_a_warehouse_connection_is_bounded_by_default(tmp_path: Path) -> None:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    # DuckDB's own default is 80 % of RAM.
    assert limit == shown(DuckDBSettings().memory_limit) == shown("128MB")


def test_the_configured_duckdb_section_applies_and_survives_migrations(tmp_path: Path) -> None:
    config = parse_config(
        {"duckdb": {"memory_limit": "100MB", "threads": 1, "temp_directory": "spill"}},
        base_dir=tmp_path,
    )
    # open_warehouse migrates after applying them: migrations do not reset the limits.
    with warehouse.open_warehouse(tmp_path / "w.duckdb", settings=config.duckdb_settings) as con:
        assert settings(con) == (shown("100MB"), 1, str(tmp_path / "spill"))
    # A connection opened elsewhere (a Dagster resource) gets them from prepare().
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        warehouse.prepare(con, config.duckdb_settings)
        assert settings(con) == (shown("100MB"), 1, str(tmp_path / "spill"))
    finally:
        con.close()


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"memory_limit": "lots"}, "duckdb.memory_limit"),
        ({"threads": 0}, "duckdb.threads"),
        ({"memory_limt": "1GB"}, "duckdb.memory_limt"),
    ],
)
def test_duckdb_mistakes_name_their_field(section: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"duckdb": section})
    assert any(p.startswith(field) for p in caught.value.problems), caught.value.problems


ROWS = 200_000
ITEM_KEYS = ("sale_key", "line_id")


def sale_items(n: int, version: str = "2026-01-01") -> pa.Table:
    keys = [f"s:T{i // 3:08d}" for i in range(n)]
    return pa.table(
        {
            "sale_key": keys,
            "line_id": [str(i % 3 + 1) for i in range(n)],
            "source": ["s"] * n,
            "sku": [f"SKU-{i % 5000:05d}-{'x' * 40}" for i in range(n)],
            "name": [f"Product name number {i} with a long description" for i in range(n)],
            "quantity": ["1"] * n,
            "subtotal": [f"{i % 100}.25" for i in range(n)],
            "_version": [version] * n,
        }
    )


def test_a_merge_larger_than_the_memory_limit_completes_by_spilling(tmp_path: Path) -> None:
    # 64 MB, not less: DuckDB 1.5+ needs ~64 MB for this merge's dedup even when spilling
    # (1.4 managed in 32 MB); the test below shows 64 MB is still too little without a spill.
    config = parse_config(
        {"duckdb": {"memory_limit": "64MB", "threads": 1, "temp_directory": "spill"}},
        base_dir=tmp_path,
    )
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        warehouse.prepare(con, config.duckdb_settings)
        with warehouse.transaction(con):
            result = warehouse.merge(con, "core.sale_items", sale_items(ROWS), ITEM_KEYS)
        assert (result.staged, result.inserted) == (ROWS, ROWS)
        assert con.execute(
            "SELECT count(*), count(DISTINCT sale_key), sum(subtotal) FROM core.sale_items"
        ).fetchone() == (
            ROWS,
            (ROWS + 2) // 3,
            Decimal(sum(i % 100 for i in range(ROWS)) + ROWS // 4),
        )


def test_without_a_temp_directory_the_same_merge_runs_out_of_memory(tmp_path: Path) -> None:
    # The counterpart of the test above, showing that merge really needs more than the limit;
    # the error raised is DuckDB's, not a follow-up "transaction is aborted".
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        con.execute("SET memory_limit = '64MB'")
        con.execute("SET threads = 1")
        con.execute("SET temp_directory = ''")
        with pytest.raises(duckdb.OutOfMemoryException), warehouse.transaction(con):
            warehouse.merge(con, "core.sale_items", sale_items(ROWS), ITEM_KEYS)
        assert con.execute("SELECT count(*) FROM core.sale_items").fetchone() == (0,)


def personas(n: int, repeated: int) -> pa.Table:
    """n persona rows shaped like a SQL source's (scattered keys, a long `_version`: source
    time | extraction time | sequence); the last `repeated` rows are a newer visit of the
    first `repeated` personas with a blank e-mail (one customer in two partitions)."""
    first = n - repeated
    ids = [f"C{i * 7919 % 1_000_003:07d}" for i in range(first)]
    ids += ids[:repeated]
    stamps = [datetime(2025, 11, 1, 6, tzinfo=UTC) + timedelta(seconds=13 * i) for i in range(n)]
    return pa.table(
        {
            "persona_key": [f"pos:{i}" for i in ids],
            "source": ["pos"] * n,
            "source_type": ["sql"] * n,
            "src_id": ids,
            "first_name": [f"First{i}" for i in range(n)],
            "last_name": [f"Last{i}" for i in range(n)],
            "email": [None if i >= first else f"customer{i}@example.com" for i in range(n)],
            "phone": [f"+1916200{i % 10_000:04d}" for i in range(n)],
            "postal_code": [f"80{i % 1000:03d}" for i in range(n)],
            "updated_at": stamps,
            "_version": [
                f"{t.isoformat()}|2026-12-07T09:19:48.475799+00:00|{i:09d}"
                for i, t in enumerate(stamps)
            ],
        }
    )


def test_a_persona_batch_with_few_repeats_merges_in_64mb_on_two_threads(tmp_path: Path) -> None:
    # The SQL bench's first merge: 20k personas, a few of them twice, arriving as the slices
    # of ~40 partitions (one Arrow chunk each). Collapsing every row of that many-chunk table
    # through per-column aggregates ran out of 64 MB on two threads. No temp directory, so
    # nothing can spill.
    n, repeated = 20_000, 60
    whole = personas(n, repeated)
    batch = pa.concat_tables([whole.slice(i, 500) for i in range(0, n, 500)])
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        con.execute("SET memory_limit = '64MB'")
        con.execute("SET threads = 2")
        con.execute("SET temp_directory = ''")
        with warehouse.transaction(con):
            result = warehouse.merge(
                con,
                "core.personas",
                batch,
                NATURAL_KEYS["core.personas"],
                keep_existing_when_null=PERSONA_STICKY,
            )
        assert (result.staged, result.inserted) == (n - repeated, n - repeated)
        rows = {
            key: (name, email)
            for key, name, email in con.execute(
                "SELECT persona_key, first_name, email FROM core.personas "
                "WHERE persona_key IN ('pos:C0055433', 'pos:C0791900')"
            ).fetchall()
        }
    # Persona 7 came twice: the newer visit's name wins, its blank e-mail keeps the known one.
    assert rows["pos:C0055433"] == (f"First{n - repeated + 7}", "customer7@example.com")
    assert rows["pos:C0791900"] == ("First100", "customer100@example.com")


def insert_bench_personas(con: warehouse.Connection, n: int) -> None:
    """n personas shaped like the 1M-order bench's: customers even, guests odd; one guest in
    ten uses the e-mail of the customer before it, later (so its phone and name win for
    that contact); phones all distinct."""
    con.execute(
        f"""
        INSERT INTO core.personas (persona_key, source, source_type, src_id, first_name,
            last_name, email, phone, updated_at, _version)
        SELECT CASE WHEN i % 2 = 0 THEN 'bc:' || i ELSE 'bc:guest:' || i END, 'bc',
            'bigcommerce', i::VARCHAR, 'First' || i, 'Last' || (i % 7919),
            'customer' || CASE WHEN i % 20 = 1 THEN i - 1 ELSE i END || '@example.com',
            '+1916' || lpad(((i * 7919) % 9999999)::VARCHAR, 7, '0'),
            TIMESTAMPTZ '2024-01-01' + to_seconds(i * 97), '2025-01-01|2026-12-07'
        FROM range({n}) t(i)
        """
    )


def test_identity_of_half_a_million_personas_fits_the_default_memory_limit(tmp_path: Path) -> None:
    # The 1M-order bench's warehouse: 500k personas (customers and guests), 1M sales. At the
    # default 128 MB, picking contact fields with arg_max over strings plus list(DISTINCT)
    # in one GROUP BY ran out of memory (those states cannot spill). The next night (below)
    # ran out too while its working tables lived inside the identity transaction.
    n = 500_000
    db = tmp_path / "w.duckdb"
    with warehouse.open_warehouse(db) as con:
        insert_bench_personas(con, n)
        con.execute(
            f"""
            INSERT INTO core.sales (sale_key, source, src_sale_id, persona_key, sold_at,
                sold_local_date, status, is_refund, _version)
            SELECT 'bc:' || j, 'bc', j::VARCHAR,
                CASE WHEN j // 2 % 2 = 0 THEN 'bc:' || j // 2 ELSE 'bc:guest:' || j // 2 END,
                TIMESTAMPTZ '2025-01-01', DATE '2025-01-01', 'completed', false, '2025-01-01'
            FROM range({2 * n}) t(j)
            """
        )
        report = resolve_contacts(con)
        assert (report.personas, report.contacts) == (n, n - n // 20)
        pair = con.execute(
            """
            SELECT c.phone, c.email, c.first_name, c.sources, c.persona_count,
                   (SELECT phone FROM core.personas WHERE persona_key = 'bc:guest:21')
            FROM core.personas p JOIN core.contacts c USING (contact_id)
            WHERE p.persona_key = 'bc:20'
            """
        ).fetchone()
        assert pair[:5] == (pair[5], "customer20@example.com", "First21", ["bc"], 2)
        assert con.execute(
            "SELECT count(*) FILTER (WHERE contact_id IS NULL) FROM core.sales"
        ).fetchone() == (0,)
    # The next night, in a new connection as the loyalty step opens it: 1 % of the personas
    # changed their first name, newer than before.
    with warehouse.open_warehouse(db) as con:
        con.execute(
            "UPDATE core.personas SET first_name = 'Renamed' || src_id, "
            "updated_at = updated_at + INTERVAL 1000 DAY WHERE hash(persona_key) % 100 = 0"
        )
        changed = con.execute(
            "SELECT count(DISTINCT contact_id) FROM core.personas WHERE first_name LIKE 'Renamed%'"
        ).fetchone()[0]
        night = resolve_contacts(con)
        assert (night.contacts, night.new_contacts, night.updated_contacts) == (
            n - n // 20,
            0,
            changed,
        )
        assert con.execute(
            "SELECT count(*) FROM core.contacts WHERE first_name LIKE 'Renamed%'"
        ).fetchone() == (changed,)


def test_running_out_of_memory_in_a_step_says_what_duckdb_held_and_what_to_raise(
    tmp_path: Path,
) -> None:
    from assets.resources import WarehouseResource

    resource = WarehouseResource(
        database=str(tmp_path / "w.duckdb"), memory_limit="64MB", threads=1
    )
    with pytest.raises(warehouse.WarehouseOutOfMemory) as caught, resource.get_connection() as con:
        warehouse.migrate(con)
        con.execute("SET temp_directory = ''")  # no spilling: the merge cannot fit
        with warehouse.transaction(con):
            warehouse.merge(con, "core.sale_items", sale_items(ROWS), ITEM_KEYS)
    message = str(caught.value)
    assert isinstance(caught.value.__cause__, duckdb.OutOfMemoryException)
    assert f"memory limit ({shown('64MB')})" in message
    assert "Raise `duckdb.memory_limit` in the config" in message
    # What the connection still holds, by DuckDB's own tags, e.g. "BASE_TABLE 0.2 MiB".
    held = message.split("Still held after the failed statement: ")[1]
    assert any(f"{tag} " in held for tag in ("HASH_TABLE", "BASE_TABLE", "IN_MEMORY_TABLE"))
    assert " MiB" in held


def test_identity_components_of_two_million_personas_fit_the_default_memory_limit(
    tmp_path: Path,
) -> None:
    # The identity step's first query (which personas share a phone or an e-mail) counted
    # every key in a window and ran out of 128 MB at 2M personas. Only the components step
    # runs here: the whole resolution of 2M personas takes ~30 s.
    from aiq_sync.identity import _components

    n = 2_000_000
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        insert_bench_personas(con, n)  # guest 20k+1 shares customer 20k's e-mail
        _components(con)  # as resolve_contacts runs it: before its write transaction
        assert con.execute("SELECT count(DISTINCT comp) FROM id_components").fetchone() == (
            n - n // 20,
        )
        comps = dict(
            con.execute(
                "SELECT persona_key, comp FROM id_components JOIN id_nodes USING (node) "
                "WHERE persona_key IN ('bc:1999980', 'bc:guest:1999981', 'bc:1999982')"
            ).fetchall()
        )
        assert comps["bc:1999980"] == comps["bc:guest:1999981"] != comps["bc:1999982"]

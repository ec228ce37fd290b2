"""The rules on the demo data, checked against SQL written from the rule text and against the
generator's ground truth; and the Dagster multi-asset that runs them."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from aiq_sync import warehouse
from aiq_sync.config import AppConfig, load_config
from aiq_sync.landing import Landing
from aiq_sync.loader import load_source
from aiq_sync.normalise import sms_capable
from aiq_sync.rules import apply_rules
from assets.core import CORE_KEYS, normalise_context
from assets.factory import build_parts
from assets.loyalty import CHECKS, LOYALTY_KEYS, build_loyalty
from assets.resources import DUCKDB_WRITER_POOL, duckdb_resource
from connectors.file_drop import FileDropNormaliser, discover, land_drop_file
from examples.generate_drops import DropReport, DropSpec, generate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENROLL_AFTER, SMS_AFTER, MINIMUM_AGE = date(2026, 9, 1), date(2026, 10, 1), 21
RULE_TABLES = (
    "core.contacts",
    "core.contact_keys",
    "core.contact_merges",
    "loyalty.members",
    "loyalty.points_ledger",
    "loyalty.opt_in_requests",
    "loyalty.opt_outs",
)


def _config(folder: Path, drops: Path, **loyalty: object) -> AppConfig:
    """The shipped demo config with its warehouse in `folder` and its drops in `drops`."""
    text = (EXAMPLES / "aiq_sync.yaml").read_text(encoding="utf-8")
    text = text.replace("../data/", "data/").replace("location: drops", f"location: {drops}")
    for key, value in loyalty.items():
        text = text.replace("loyalty:\n", f"loyalty:\n  {key}: {value}\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "aiq_sync.yaml").write_text(text, encoding="utf-8")
    config = load_config(folder / "aiq_sync.yaml")
    source = config.source("drops")
    assert (source.enroll_after, source.sms_double_opt_in_after) == (ENROLL_AFTER, SMS_AFTER)
    return config


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, DropReport]:
    """The demo drops (regenerated: identical to examples/drops) loaded into a warehouse."""
    root = tmp_path_factory.mktemp("demo")
    report = generate(root / "drops", DropSpec())
    config = _config(root / "base", root / "drops")
    landing = Landing(config.landing_path)
    for drop in discover(root / "drops"):
        land_drop_file(landing, "drops", drop)
    with warehouse.open_warehouse(config.warehouse_path) as con:
        stores = [(s.id, s.name, [k for k in s.keys_for("drops")]) for s in config.stores]
        warehouse.refresh_stores(con, stores)
        load_source(con, landing, FileDropNormaliser(), normalise_context(config, "drops"))
    return config.warehouse_path, root / "drops", report


@pytest.fixture
def demo_config(tmp_path: Path, demo: tuple[Path, Path, DropReport]) -> AppConfig:
    built, drops, _ = demo
    config = _config(tmp_path, drops)
    config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, config.warehouse_path)
    return config


def _people(con: warehouse.Connection, report: DropReport) -> None:
    """person(persona_key, person): the generator's truth of who is who (aliases -> original)."""
    con.execute("CREATE OR REPLACE TEMP TABLE alias (src_id VARCHAR, original VARCHAR)")
    con.executemany("INSERT INTO alias VALUES (?, ?)", list(report.alias_patient_numbers.items()))
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE person AS
        SELECT p.persona_key, coalesce(a.original, p.src_id) AS person, p.phone, p.birth_date
        FROM core.personas p LEFT JOIN alias a USING (src_id)
        """
    )


# Written from the rule text, independently of aiq_sync.loyalty: a completed sale from the
# source, on or after the date (store's local day), by someone 21 or older that day.
QUALIFYING = """
    SELECT s.sale_key, s.src_sale_id, s.sold_local_date, s.total, s.tax, person.person,
           person.phone
    FROM core.sales s JOIN person USING (persona_key)
    WHERE s.source = 'drops' AND s.status = 'completed' AND NOT s.is_refund
      AND s.sold_local_date >= DATE '{day}'
      AND (person.birth_date IS NULL
           OR date_diff('year', person.birth_date, s.sold_local_date)
              - CASE WHEN strftime(s.sold_local_date, '%m-%d')
                          < strftime(person.birth_date, '%m-%d')
                     THEN 1 ELSE 0 END >= 21)
"""


def _expected(con: warehouse.Connection, report: DropReport) -> dict[str, object]:
    _people(con, report)
    enroll = QUALIFYING.format(day=ENROLL_AFTER)
    sms = QUALIFYING.format(day=SMS_AFTER)
    members = con.execute(f"SELECT count(DISTINCT person) FROM ({enroll})").fetchone()[0]
    earn_rows, earned = con.execute(
        f"SELECT count(*), sum(floor(total - coalesce(tax, 0))) FROM ({enroll})"
    ).fetchone()
    # every refund of a qualifying sale takes back its own amount's points, at most the earned
    refunds = con.execute(
        f"""
        SELECT count(*), count(DISTINCT q.sale_key),
               sum(least(floor(abs(r.total - coalesce(r.tax, 0))),
                         floor(q.total - coalesce(q.tax, 0))))
        FROM core.sales r JOIN ({enroll}) q ON r.refunded_sale_id = q.src_sale_id
        WHERE r.is_refund AND r.source = 'drops'
        """
    ).fetchone()
    assert refunds[0] == refunds[1], "demo data has one refund per sale at most"
    phones = [p for (p,) in con.execute(f"SELECT DISTINCT phone FROM ({sms})").fetchall()]
    capable = [p for p in phones if p and sms_capable(p)]
    con.execute("CREATE OR REPLACE TEMP TABLE capable (phone VARCHAR)")
    con.executemany("INSERT INTO capable VALUES (?)", [[p] for p in capable])
    requests = con.execute(
        f"SELECT count(DISTINCT person) FROM ({sms}) WHERE phone IN (SELECT phone FROM capable)"
    ).fetchone()[0]
    return {
        "members": members,
        "points_rows": earn_rows + refunds[0],
        "points_balance": earned - refunds[2],
        "opt_in_requests": requests,
        "contacts": con.execute("SELECT count(DISTINCT person) FROM person").fetchone()[0],
    }


def _measured(con: warehouse.Connection) -> dict[str, object]:
    def one(sql: str) -> object:
        return con.execute(sql).fetchone()[0]

    return {
        "members": one("SELECT count(*) FROM loyalty.members"),
        "points_rows": one("SELECT count(*) FROM loyalty.points_ledger"),
        "points_balance": one("SELECT sum(points) FROM loyalty.points_ledger"),
        "opt_in_requests": one("SELECT count(*) FROM loyalty.opt_in_requests"),
        "contacts": one("SELECT count(*) FROM core.contacts"),
    }


def _snapshot(con: warehouse.Connection) -> dict[str, list[tuple]]:
    tables = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in RULE_TABLES}
    tables["links"] = con.execute(
        "SELECT persona_key, contact_id, favorite_store_id FROM core.personas ORDER BY ALL"
    ).fetchall()
    tables["sales"] = con.execute(
        "SELECT sale_key, contact_id FROM core.sales ORDER BY ALL"
    ).fetchall()
    return tables


def test_demo_counts_match_the_rule_text_and_a_second_run_changes_nothing(
    demo_config: AppConfig, demo: tuple[Path, Path, DropReport]
) -> None:
    _, _, truth = demo
    with warehouse.open_warehouse(demo_config.warehouse_path) as con:
        first = apply_rules(con, demo_config, now=datetime(2026, 11, 1, tzinfo=UTC))
        measured = _measured(con)
        assert measured == _expected(con, truth)
        assert first.changed and measured["members"] > 0 and measured["opt_in_requests"] > 0
        before = _snapshot(con)
        second = apply_rules(con, demo_config, now=datetime(2026, 11, 2, tzinfo=UTC))
        assert not second.changed
        assert _snapshot(con) == before


def test_demo_ground_truth(demo_config: AppConfig, demo: tuple[Path, Path, DropReport]) -> None:
    _, _, truth = demo
    with warehouse.open_warehouse(demo_config.warehouse_path) as con:
        report = apply_rules(con, demo_config)
        contact = dict(con.execute("SELECT src_id, contact_id FROM core.personas").fetchall())
        # every duplicate patient record is its original's contact, and nothing else merged
        assert truth.alias_patient_numbers
        for alias, original in truth.alias_patient_numbers.items():
            assert contact[alias] == contact[original]
        assert report.identity.contacts == report.identity.personas - len(
            truth.alias_patient_numbers
        )
        # toll-free numbers are never asked; valid mobiles are
        asked = {
            src
            for (src,) in con.execute(
                "SELECT p.src_id FROM loyalty.opt_in_requests r "
                "JOIN core.personas p USING (contact_id)"
            ).fetchall()
        }
        kinds = truth.phone_kind_by_customer
        assert not {c for c, k in kinds.items() if k in ("toll_free", "invalid", "blank")} & asked
        assert report.opt_ins.skipped_not_sms_capable > 0
        # nobody under 21 on the day they enrolled (the demo has under-21 shoppers)
        assert truth.under_21_customers_with_sales > 0
        under_age = con.execute(
            """
            SELECT count(*) FROM loyalty.members m JOIN core.contacts c USING (contact_id)
            WHERE c.birth_date + INTERVAL 21 YEAR
                  > (m.enrolled_at AT TIME ZONE 'America/Los_Angeles')::DATE
            """
        ).fetchone()[0]
        assert under_age == 0
        excluded = con.execute(
            """
            SELECT count(DISTINCT s.contact_id) FROM core.sales s
            JOIN core.contacts c USING (contact_id)
            WHERE s.sold_local_date >= DATE '2026-09-01' AND s.status = 'completed'
              AND c.birth_date + INTERVAL 21 YEAR > s.sold_local_date
              AND s.contact_id NOT IN (SELECT contact_id FROM loyalty.members)
            """
        ).fetchone()[0]
        assert excluded > 0
        # every contact with a mapped sale has a favourite store, and the analytics views run
        views = ("loyalty_members", "opt_in_queue", "store_daily_sales", "personas", "sales")
        counts = {
            v: con.execute(f"SELECT count(*) FROM analytics.{v}").fetchone()[0] for v in views
        }
        assert counts["loyalty_members"] == report.members.members
        assert counts["opt_in_queue"] == report.opt_ins.pending
        balance = con.execute(
            "SELECT sum(points_balance) FROM analytics.loyalty_members"
        ).fetchone()
        assert balance[0] == Decimal(str(report.points.balance))
        named = con.execute(
            "SELECT count(*) FROM analytics.store_daily_sales WHERE store_name IS NOT NULL"
        ).fetchone()[0]
        assert named > 0


# ----------------------------------------------------------------------------------- Dagster


def _materialize(config: AppConfig) -> dg.ExecuteInProcessResult:
    asset = build_loyalty(config, list(CORE_KEYS.values()))
    return dg.materialize(
        [asset],
        resources={"duckdb": duckdb_resource(config)},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def test_asset_materializes_with_counts_checks_and_no_change_the_second_time(
    demo_config: AppConfig,
) -> None:
    first = _materialize(demo_config)
    assert first.success
    checks = {c.check_name: c.passed for c in first.get_asset_check_evaluations()}
    assert checks == {c.name: True for c in CHECKS}
    meta = _metadata(first)
    assert sorted(meta) == sorted(k.to_user_string() for k in LOYALTY_KEYS.values())
    with warehouse.open_warehouse(demo_config.warehouse_path, read_only=True) as con:
        counts = warehouse.table_counts(con, list(LOYALTY_KEYS))
    for table, key in LOYALTY_KEYS.items():
        assert meta[key.to_user_string()]["rows"] == counts[table]
    assert meta["loyalty/members"]["enrolled_this_run"] == counts["loyalty.members"]
    assert meta["loyalty/opt_in_requests"]["queued_this_run"] == counts["loyalty.opt_in_requests"]
    # no personal data in the event log
    text = repr(meta)
    assert "+1" not in text and "@" not in text

    second = _metadata(_materialize(demo_config))
    assert second["core/contacts"]["contacts_new"] == 0
    assert second["core/contacts"]["personas_reassigned"] == 0
    assert second["loyalty/members"]["enrolled_this_run"] == 0
    assert second["loyalty/points_ledger"]["earn_rows_new"] == 0
    assert second["loyalty/opt_in_requests"]["queued_this_run"] == 0


def test_missing_opt_out_file_fails_its_check(
    tmp_path: Path, demo: tuple[Path, Path, DropReport]
) -> None:
    built, drops, _ = demo
    config = _config(tmp_path, drops, opt_out_file="optouts.csv")
    config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, config.warehouse_path)
    result = _materialize(config)
    assert result.success  # checks report; they do not fail the run
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert failed == {"opt_out_file_read"}
    assert _metadata(result)["loyalty/opt_in_requests"]["held_back"] is True


def test_asset_wires_after_the_core_tables(demo_config: AppConfig) -> None:
    parts = build_parts(demo_config)
    asset = build_loyalty(demo_config, list(CORE_KEYS.values()))
    defs = dg.Definitions(assets=[parts.core, asset], resources=parts.resources)
    graph = defs.get_repository_def().asset_graph
    for key in LOYALTY_KEYS.values():
        node = graph.get(key)
        assert set(node.parent_keys) == set(CORE_KEYS.values())
        assert node.automation_condition is not None
    assert asset.op.pool == DUCKDB_WRITER_POOL
    assert asset.group_names_by_key[LOYALTY_KEYS["core.contacts"]] == "core"
    assert asset.group_names_by_key[LOYALTY_KEYS["loyalty.members"]] == "loyalty"

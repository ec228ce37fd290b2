"""Loyalty and SMS rules, edge by edge, on real DuckDB files (no Dagster).

Source `a` is in Los Angeles unless a case says otherwise; a sale's `local` time is the
store's wall clock, so its local date is what the rules compare with the rule date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aiq_sync import warehouse
from aiq_sync.canonical import NormaliseContext
from aiq_sync.config import AppConfig, parse_config
from aiq_sync.landing import Landing
from aiq_sync.loader import load_source
from aiq_sync.loyalty import (
    OPT_OUT_FILE_SOURCE,
    OptOut,
    age_on,
    opt_out_keyword,
    purge_members,
    record_opt_outs,
    rules_from_config,
)
from aiq_sync.rules import RulesReport, apply_rules
from connectors.file_drop import FileDropNormaliser, discover, land_drop_file
from tests.conftest import line, write_drop
from tests.test_identity import PHONE_A, PHONE_B, PHONE_C, TOLL_FREE, Shop

NOW = datetime(2025, 1, 1, tzinfo=UTC)
JUNE_1 = date(2024, 6, 1)


class World(Shop):
    """A warehouse plus a config whose rule dates each test sets."""

    def __init__(self, con: warehouse.Connection, folder: Path):
        super().__init__(con)
        self.folder = folder

    def config(self, sources: dict[str, dict[str, Any]], **loyalty: Any) -> AppConfig:
        raw = {
            "warehouse": "w.duckdb",
            "sources": [
                {
                    "name": name,
                    "type": "file_drop",
                    "location": "drops",
                    "age_gate_confirmed": True,
                    **options,
                }
                for name, options in sources.items()
            ],
            "loyalty": loyalty,
        }
        return parse_config(raw, base_dir=self.folder)

    def apply(self, sources: dict[str, dict[str, Any]], **loyalty: Any) -> RulesReport:
        return apply_rules(self.con, self.config(sources, **loyalty), now=NOW)

    def members(self) -> dict[str, tuple]:
        """persona key of each member's first persona -> (source, enrolled_at, rule_date)."""
        rows = self.con.execute(
            """
            SELECT min(p.persona_key), m.source, m.enrolled_at, m.rule_date
            FROM loyalty.members m JOIN core.personas p USING (contact_id)
            GROUP BY m.contact_id, m.source, m.enrolled_at, m.rule_date
            """
        ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def ledger(self) -> list[tuple[str, str, Decimal]]:
        return self.con.execute(
            "SELECT sale_key, kind, points FROM loyalty.points_ledger ORDER BY earned_at, sale_key"
        ).fetchall()

    def requests(self) -> list[tuple]:
        return self.con.execute(
            "SELECT phone, source, qualifying_sale_at, status FROM loyalty.opt_in_requests "
            "ORDER BY phone"
        ).fetchall()

    def opt_out_file(self, rows: list[tuple[str, str, str]], name: str = "optouts.csv") -> str:
        lines = ["phone,keyword,opted_out_at", *(",".join(r) for r in rows)]
        (self.folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return name


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        yield World(con, tmp_path)


ENROLL = {"a": {"enroll_after": JUNE_1}}
SMS = {"a": {"sms_double_opt_in_after": JUNE_1}}


def utc(local: str, tz: str = "America/Los_Angeles") -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


# ----------------------------------------------------------------------------- enroll-after

# sales: (local time, extra Shop.sale arguments); expected: local time of enrolled_at or None
ENROLL_CASES = {
    "on the date in the store's time zone": (None, [("2024-06-01 00:30", {})], "2024-06-01 00:30"),
    "UTC says June 1st, the store says May 31st": (None, [("2024-05-31 23:30", {})], None),
    "UTC says May 31st, the store (Tokyo) says June 1st": (
        None,
        [("2024-06-01 08:00", {"tz": "Asia/Tokyo"})],
        ("2024-06-01 08:00", "Asia/Tokyo"),
    ),
    "the day before": (None, [("2024-05-31 12:00", {})], None),
    "pending and cancelled sales do not count": (
        None,
        [
            ("2024-06-02 12:00", {"status": "pending"}),
            ("2024-06-03 12:00", {"status": "cancelled"}),
        ],
        None,
    ),
    "first completed sale on or after the date": (
        None,
        [
            ("2024-05-20 12:00", {}),
            ("2024-06-02 12:00", {"status": "declined"}),
            ("2024-06-05 12:00", {}),
            ("2024-06-09 12:00", {}),
        ],
        "2024-06-05 12:00",
    ),
    "a refund alone does not enroll": (None, [("2024-06-02 12:00", {"refund_of": "x"})], None),
    "under age on the sale's day": (date(2003, 6, 16), [("2024-06-15 12:00", {})], None),
    "21st birthday on the sale's day": (
        date(2003, 6, 15),
        [("2024-06-15 09:00", {})],
        "2024-06-15 09:00",
    ),
    "turns 21 between two sales": (
        date(2003, 6, 10),
        [("2024-06-05 12:00", {}), ("2024-06-12 12:00", {})],
        "2024-06-12 12:00",
    ),
    "29 February birthday comes on 1 March": (
        date(2004, 2, 29),
        [("2025-02-28 12:00", {}), ("2025-03-01 12:00", {})],
        "2025-03-01 12:00",
    ),
    "unknown birth date passes (the age gate vouches)": (
        None,
        [("2024-06-02 12:00", {})],
        "2024-06-02 12:00",
    ),
}


@pytest.mark.parametrize("birth, sales, expected", ENROLL_CASES.values(), ids=ENROLL_CASES.keys())
def test_enroll_after(world: World, birth: date | None, sales: list, expected: Any) -> None:
    world.persona("a:1", phone=PHONE_A, birth=birth)
    for i, (local, extra) in enumerate(sales):
        world.sale(f"t{i}", "a:1", local=local, **extra)
    world.apply(ENROLL)
    if expected is None:
        assert world.members() == {}
        assert world.ledger() == []
        return
    local, tz = expected if isinstance(expected, tuple) else (expected, "America/Los_Angeles")
    assert world.members() == {"a:1": ("a", utc(local, tz), JUNE_1)}


def test_only_sales_of_the_rule_source_count(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.persona("b:1", phone=PHONE_A)  # same person, shopping at b, which has no rule
    world.persona("b:2", phone=PHONE_B)
    world.sale("t1", "b:1", local="2024-06-05 12:00")
    world.sale("t2", "b:2", local="2024-06-05 12:00")
    world.apply({**ENROLL, "b": {}})
    assert world.members() == {}
    world.sale("t3", "a:1", local="2024-06-07 12:00")
    world.apply({**ENROLL, "b": {}})
    assert world.members() == {"a:1": ("a", utc("2024-06-07 12:00"), JUNE_1)}
    assert [k for k, _, _ in world.ledger()] == ["a:t3"]  # b's sale earns nothing


def test_anonymous_sales_enroll_nobody(world: World) -> None:
    world.persona("a:1", first=None, last=None)  # no PII: no contact
    world.sale("t1", "a:1", local="2024-06-05 12:00")
    world.sale("t2", None, local="2024-06-05 12:00")
    world.apply(ENROLL)
    assert world.members() == {} and world.ledger() == []


def test_age_gate_not_confirmed_source_is_skipped(world: World) -> None:
    # The config refuses this combination; the rules refuse it too (second lock).
    config = world.config({"a": {"enroll_after": JUNE_1, "sms_double_opt_in_after": JUNE_1}})
    ungated = config.sources[0].model_copy(update={"age_gate_confirmed": False})
    config = config.model_copy(update={"sources": [ungated]})
    assert rules_from_config(config) == []
    world.persona("a:1", phone=PHONE_A)
    world.sale("t1", "a:1", local="2024-06-05 12:00")
    report = apply_rules(world.con, config, now=NOW)
    assert (report.members.members, report.points.rows, report.opt_ins.queued) == (0, 0, 0)


# ----------------------------------------------------------------------------------- points

# sales: (id, local time, total, tax, refund_of); expected ledger: (sale id, kind, points)
POINT_CASES = {
    "rounded down, tax excluded": (
        1,
        [("t1", "2024-06-02 10:00", "14.99", "2.00", None)],
        [("t1", "earn", 12)],
    ),
    "points per currency unit": (
        3,
        [("t1", "2024-06-02 10:00", "12.99", "0", None)],
        [("t1", "earn", 38)],
    ),
    "a full refund reverses everything": (
        1,
        [
            ("t1", "2024-06-02 10:00", "14.99", "2.00", None),
            ("r1", "2024-06-03 10:00", "14.99", "2.00", "t1"),
        ],
        [("t1", "earn", 12), ("r1", "reverse", -12)],
    ),
    "a partial refund reverses its share": (
        1,
        [
            ("t1", "2024-06-02 10:00", "30.00", "0", None),
            ("r1", "2024-06-03 10:00", "10.00", "0", "t1"),
        ],
        [("t1", "earn", 30), ("r1", "reverse", -10)],
    ),
    "refunds never reverse more than the sale earned": (
        1,
        [
            ("t1", "2024-06-02 10:00", "12.99", "0", None),
            ("r1", "2024-06-03 10:00", "8.00", "0", "t1"),
            ("r2", "2024-06-04 10:00", "8.00", "0", "t1"),
        ],
        [("t1", "earn", 12), ("r1", "reverse", -8), ("r2", "reverse", -4)],
    ),
    "refund of a sale from before the date reverses nothing": (
        1,
        [
            ("t1", "2024-05-31 10:00", "20.00", "0", None),
            ("r1", "2024-06-03 10:00", "20.00", "0", "t1"),
        ],
        [],
    ),
    "a refund after the date of a sale on the date": (
        2,
        [
            ("t1", "2024-06-01 00:00", "20.50", "0", None),
            ("r1", "2024-07-01 10:00", "20.50", "0", "t1"),
        ],
        [("t1", "earn", 41), ("r1", "reverse", -41)],
    ),
}


@pytest.mark.parametrize("rate, sales, expected", POINT_CASES.values(), ids=POINT_CASES.keys())
def test_points(world: World, rate: int, sales: list, expected: list) -> None:
    world.persona("a:1", phone=PHONE_A)
    for sale_id, local, total, tax, refund_of in sales:
        world.sale(sale_id, "a:1", local=local, total=total, tax=tax, refund_of=refund_of)
    world.apply(ENROLL, points_per_currency_unit=rate)
    assert world.ledger() == [(f"a:{s}", kind, Decimal(p)) for s, kind, p in expected]
    assert not world.apply(ENROLL, points_per_currency_unit=rate).changed


def test_rate_change_applies_to_new_sales_only(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.sale("t1", "a:1", local="2024-06-02 10:00", total="10.00")
    world.apply(ENROLL, points_per_currency_unit=1)
    world.sale("t2", "a:1", local="2024-06-03 10:00", total="10.00")
    world.sale("r1", "a:1", local="2024-06-04 10:00", total="10.00", refund_of="t1")
    world.apply(ENROLL, points_per_currency_unit=5)
    assert world.ledger() == [
        ("a:t1", "earn", Decimal(10)),
        ("a:t2", "earn", Decimal(50)),
        ("a:r1", "reverse", Decimal(-10)),  # at the rate t1 earned at
    ]


def test_late_lines_correct_the_sale_and_its_reversal(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.sale("t1", "a:1", local="2024-06-02 10:00", total="10.00")
    world.sale("r1", "a:1", local="2024-06-04 10:00", total="25.00", refund_of="t1")
    world.apply(ENROLL)
    assert [p for _, _, p in world.ledger()] == [10, -10]
    # a second item line of t1 arrives in a later file: the loader recomputes its total
    world.con.execute("UPDATE core.sales SET total = 30, subtotal = 30 WHERE sale_key = 'a:t1'")
    report = world.apply(ENROLL)
    assert [p for _, _, p in world.ledger()] == [30, -25]
    assert (report.points.earned_corrected, report.points.reversed_corrected) == (1, 1)


def test_a_cancelled_sale_loses_its_points_and_gets_them_back_if_completed_again(
    world: World,
) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.sale("t1", "a:1", local="2024-06-02 10:00", total="40.00")
    world.sale("r1", "a:1", local="2024-06-03 10:00", total="10.00", refund_of="t1")
    world.sale("t2", "a:1", local="2024-06-05 10:00", total="5.00")
    world.apply(ENROLL)
    assert [p for _, _, p in world.ledger()] == [40, -10, 5]

    # the store cancels t1 after the fact (BigCommerce status 5): its points and the
    # refund's reversal go to 0; the rows stay as history
    world.con.execute("UPDATE core.sales SET status = 'cancelled' WHERE sale_key = 'a:t1'")
    report = world.apply(ENROLL)
    assert world.ledger() == [
        ("a:t1", "earn", Decimal(0)),
        ("a:r1", "reverse", Decimal(0)),
        ("a:t2", "earn", Decimal(5)),
    ]
    assert (report.points.earned_voided, report.points.reversed_corrected) == (1, 1)
    assert not world.apply(ENROLL).changed

    world.con.execute("UPDATE core.sales SET status = 'completed' WHERE sale_key = 'a:t1'")
    world.apply(ENROLL)
    assert [p for _, _, p in world.ledger()] == [40, -10, 5]


# ---------------------------------------------------------------------- sticky membership


def test_date_removed_then_readded(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.persona("a:2", phone=PHONE_B)
    world.sale("t1", "a:1", local="2024-06-02 10:00")
    world.apply(ENROLL)
    members = world.members()
    assert list(members) == ["a:1"]
    # the setting is removed: members stay, new sales earn nothing and enroll nobody
    world.sale("t2", "a:1", local="2024-06-10 10:00")
    world.sale("t3", "a:2", local="2024-06-10 10:00")
    report = world.apply({"a": {}})
    assert world.members() == members
    assert [k for k, _, _ in world.ledger()] == ["a:t1"]
    assert (report.members.enrolled, report.points.changed) == (0, 0)
    # re-added: no second membership, the sales since then catch up
    world.apply(ENROLL)
    assert world.members() == {**members, "a:2": ("a", utc("2024-06-10 10:00"), JUNE_1)}
    assert [k for k, _, _ in world.ledger()] == ["a:t1", "a:t2", "a:t3"]
    assert not world.apply(ENROLL).changed


def test_date_moved_later_keeps_members_until_purged(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.persona("a:2", phone=PHONE_B)
    world.sale("t1", "a:1", local="2024-06-02 10:00")
    world.sale("t2", "a:2", local="2024-07-05 10:00")
    world.apply(ENROLL)
    july = {"a": {"enroll_after": date(2024, 7, 1)}}
    world.apply(july)
    assert world.members() == {
        "a:1": ("a", utc("2024-06-02 10:00"), JUNE_1),
        "a:2": ("a", utc("2024-07-05 10:00"), JUNE_1),
    }
    assert purge_members(world.con, "a", "other_reason") == 0
    assert purge_members(world.con, "a", "enroll_after") == 2
    assert world.members() == {}
    world.apply(july)  # the rule as it stands now re-enrolls who qualifies under it
    assert world.members() == {"a:2": ("a", utc("2024-07-05 10:00"), date(2024, 7, 1))}
    assert len(world.ledger()) == 2  # the ledger is history: purge leaves it


def test_memberships_are_per_source(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.persona("b:1", phone=PHONE_A)
    world.sale("t1", "a:1", local="2024-06-02 10:00")
    world.sale("t2", "b:1", local="2024-06-03 10:00", tz="America/New_York")
    world.apply({**ENROLL, "b": {"enroll_after": date(2024, 6, 3)}})
    rows = world.con.execute(
        "SELECT count(DISTINCT contact_id), list(source ORDER BY source) FROM loyalty.members"
    ).fetchone()
    assert rows == (1, ["a", "b"])


# ------------------------------------------------------------------------- SMS opt-in

# persona phone, birth date, sale (local time, extra), opted-out phones -> queued?
SMS_CASES = {
    "mobile phone and a sale on the date": (PHONE_A, None, ("2024-06-01 09:00", {}), [], True),
    "sale the day before": (PHONE_A, None, ("2024-05-31 23:59", {}), [], False),
    "toll-free cannot receive SMS": (TOLL_FREE, None, ("2024-06-02 09:00", {}), [], False),
    "no phone": (None, None, ("2024-06-02 09:00", {}), [], False),
    "Canadian mobile": (PHONE_C, None, ("2024-06-02 09:00", {}), [], True),
    "opted out before": (PHONE_A, None, ("2024-06-02 09:00", {}), [PHONE_A], False),
    "under age": (PHONE_A, date(2004, 1, 1), ("2024-06-02 09:00", {}), [], False),
    "pending sale": (PHONE_A, None, ("2024-06-02 09:00", {"status": "pending"}), [], False),
    "refund": (PHONE_A, None, ("2024-06-02 09:00", {"refund_of": "x"}), [], False),
}


@pytest.mark.parametrize(
    "phone, birth, sale, opted_out, queued", SMS_CASES.values(), ids=SMS_CASES.keys()
)
def test_sms_opt_in(
    world: World, phone: str | None, birth: date | None, sale: tuple, opted_out: list, queued: bool
) -> None:
    world.persona("a:1", phone=phone, birth=birth, email="x@example.com")
    local, extra = sale
    world.sale("t1", "a:1", local=local, **extra)
    record_opt_outs(world.con, "a", [OptOut(p, "STOP") for p in opted_out])
    report = world.apply(SMS)
    expected = [(phone, "a", utc(local), "pending")] if queued else []
    assert world.requests() == expected
    assert report.members.members == 0  # SMS consent and loyalty are separate rules
    assert not world.apply(SMS).changed


def test_one_request_per_phone_across_sources_and_runs(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.persona("b:1", phone=PHONE_A, email="x@example.com")
    world.sale("t1", "b:1", local="2024-06-02 09:00")
    world.sale("t2", "a:1", local="2024-06-03 09:00")
    sms_both = {**SMS, "b": {"sms_double_opt_in_after": JUNE_1}}
    report = world.apply(sms_both)
    assert world.requests() == [(PHONE_A, "b", utc("2024-06-02 09:00"), "pending")]
    assert report.opt_ins.queued == 1
    world.sale("t3", "a:1", local="2024-06-20 09:00")
    assert world.apply(sms_both).opt_ins.queued == 0
    assert len(world.requests()) == 1


def test_a_contact_is_asked_once_even_with_a_new_phone(world: World) -> None:
    world.persona("a:1", phone=PHONE_A, email="x@example.com")
    world.sale("t1", "a:1", local="2024-06-02 09:00")
    world.apply(SMS)
    world.update_persona("a:1", phone=PHONE_B)
    world.sale("t2", "a:1", local="2024-06-09 09:00")
    world.apply(SMS)
    assert [r[0] for r in world.requests()] == [PHONE_A]


def test_opt_out_then_repurchase(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.persona("a:2", phone=PHONE_B)
    world.sale("t1", "a:1", local="2024-06-02 09:00")
    world.apply(SMS)
    assert [r[3] for r in world.requests()] == ["pending"]
    # both phones text STOP-like keywords (one before ever being asked)
    name = world.opt_out_file(
        [("(415) 234-5678", "stop", "2024-06-03T10:00:00Z"), ("503-234-5678", "Opt-Out", "")]
    )
    report = world.apply(SMS, opt_out_file=name)
    assert (report.opt_outs.new, report.opt_ins.withdrawn) == (2, 1)
    assert [r[3] for r in world.requests()] == ["opted_out"]
    world.sale("t2", "a:1", local="2024-06-10 09:00")
    world.sale("t3", "a:2", local="2024-06-10 09:00")
    report = world.apply(SMS, opt_out_file=name)
    assert world.requests() == [(PHONE_A, "a", utc("2024-06-02 09:00"), "opted_out")]
    assert (report.opt_ins.queued, report.opt_ins.skipped_opted_out) == (0, 1)
    # opt-outs are sticky: the file losing the rows changes nothing
    world.opt_out_file([])
    report = world.apply(SMS, opt_out_file=name)
    assert (report.opt_ins.queued, report.opt_outs.total) == (0, 2)


def test_opt_out_file_rows_that_cannot_be_used_are_quarantined(world: World) -> None:
    name = world.opt_out_file(
        [
            (PHONE_A, "UNSUBSCRIBE", "2024-06-03"),
            ("555-123-4567", "STOP", ""),
            (PHONE_B, "HELP", ""),
            (PHONE_C, "QUIT", "yesterday"),
        ]
    )
    report = world.apply(SMS, opt_out_file=name)
    assert (report.opt_outs.read, report.opt_outs.rejected, report.opt_outs.new) == (1, 3, 1)
    stored = world.con.execute(
        "SELECT phone, keyword, opted_out_at, source FROM loyalty.opt_outs"
    ).fetchall()
    assert stored == [
        (PHONE_A, "UNSUBSCRIBE", datetime(2024, 6, 3, tzinfo=UTC), OPT_OUT_FILE_SOURCE)
    ]
    reasons = world.con.execute(
        "SELECT line, reason FROM ops.quarantine WHERE entity = 'opt_outs' ORDER BY line"
    ).fetchall()
    assert [line for line, _ in reasons] == [3, 4, 5]
    assert "phone" in reasons[0][1] and "keyword" in reasons[1][1] and "ISO" in reasons[2][1]


def test_missing_opt_out_file_holds_back_sms_only(world: World) -> None:
    world.persona("a:1", phone=PHONE_A)
    world.sale("t1", "a:1", local="2024-06-02 09:00")
    report = world.apply(
        {"a": {"enroll_after": JUNE_1, "sms_double_opt_in_after": JUNE_1}},
        opt_out_file="missing.csv",
    )
    assert report.opt_outs.missing and report.opt_ins is None
    assert world.requests() == [] and report.members.members == 1


@pytest.mark.parametrize(
    "raw, keyword",
    [
        ("stop", "STOP"),
        (" Opt-Out ", "OPT OUT"),
        ("OPTOUT", "OPT OUT"),
        ("revoke", "REVOKE"),
        ("End", "END"),
        ("cancel", "CANCEL"),
        ("quit", "QUIT"),
        ("unsubscribe", "UNSUBSCRIBE"),
        ("HELP", None),
        ("YES", None),
        ("", None),
        (None, None),
    ],
)
def test_opt_out_keywords(raw: str | None, keyword: str | None) -> None:
    assert opt_out_keyword(raw) == keyword


@pytest.mark.parametrize(
    "birth, day, age",
    [
        (date(2003, 6, 15), date(2024, 6, 14), 20),
        (date(2003, 6, 15), date(2024, 6, 15), 21),
        (date(2004, 2, 29), date(2025, 2, 28), 20),
        (date(2004, 2, 29), date(2025, 3, 1), 21),
        (date(2004, 2, 29), date(2028, 2, 29), 24),
    ],
)
def test_age_on(birth: date, day: date, age: int) -> None:
    assert age_on(birth, day) == age


# --------------------------------------------------------------- through the real loader


def test_rule_date_is_the_stores_day_through_the_file_drop_loader(
    make_config: Callable[..., AppConfig],
) -> None:
    config = make_config(
        sources=[
            {
                "name": "drops",
                "type": "file_drop",
                "location": "drops",
                "timezone": "America/Los_Angeles",
                "age_gate_confirmed": True,
                "enroll_after": "2026-09-01",
                "sms_double_opt_in_after": "2026-09-01",
            }
        ]
    )
    rows = [  # 23:50 on Aug 31 in LA is Sep 1 in UTC; 00:10 on Sep 1 in LA is Sep 1 anyway
        line(TransactionID="T1", Patient_Number="C1", TransactionDate="2026/08/31",
             Completed_Time="23:50:00", Patient_Phone_Default="4152345678",
             Patient_email="one@example.com"),
        line(TransactionID="T2", Patient_Number="C2", TransactionDate="2026/09/01",
             Completed_Time="00:10:00", Patient_Phone_Default="5032345678",
             Patient_email="two@example.com"),
    ]  # fmt: skip
    write_drop(config.resolve("drops") / "d.csv", rows)
    landing = Landing(config.landing_path)
    for drop in discover(config.resolve("drops")):
        land_drop_file(landing, "drops", drop)
    with warehouse.open_warehouse(config.warehouse_path) as con:
        context = NormaliseContext("drops", "file_drop", "America/Los_Angeles", {"101": "midtown"})
        load_source(con, landing, FileDropNormaliser(), context)
        apply_rules(con, config, now=NOW)
        members = con.execute(
            "SELECT p.src_id FROM loyalty.members JOIN core.personas p USING (contact_id)"
        ).fetchall()
        phones = con.execute("SELECT phone FROM loyalty.opt_in_requests").fetchall()
    assert members == [("C2",)]
    assert phones == [("+15032345678",)]

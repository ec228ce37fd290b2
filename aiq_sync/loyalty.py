"""Per-source loyalty and SMS rules: enroll-after, points, SMS double opt-in, opt-outs.

Shared vocabulary (docs/loyalty.md has the full rule text):
- a *completed sale* is `NOT is_refund AND status = 'completed'`;
- a rule date compares with `core.sales.sold_local_date`, the sale's day in its source's
  time zone, so "on or after 2024-06-01" means the store's June 1st, not UTC's;
- a sale *qualifies* for a rule when it is completed, from a source carrying the rule (and
  `age_gate_confirmed: true`), on or after the date, linked to a contact, and the contact is
  at least `minimum_age` on the sale's local day (an unknown birth date passes: the source's
  age gate vouches for it).

Every step is set-based SQL in one transaction and idempotent: re-running with the same data
changes nothing. Membership is sticky (a removed or moved date never removes members; only
`purge_members` does) and so is the ledger (rows are added or corrected, never dropped).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa

from aiq_sync import warehouse
from aiq_sync.canonical import QUARANTINE_SCHEMA
from aiq_sync.config import AppConfig
from aiq_sync.normalise import phone_e164, sms_capable
from aiq_sync.warehouse import Connection

log = logging.getLogger("aiq_sync.loyalty")

ENROLL_REASON = "enroll_after"
EARN, REVERSE = "earn", "reverse"
PENDING, OPTED_OUT = "pending", "opted_out"
OPT_OUT_KEYWORDS = ("STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE")
# Opt-outs read from `loyalty.opt_out_file` are recorded under this source name.
OPT_OUT_FILE_SOURCE = "opt_out_file"
# ops.quarantine (source, entity) for opt-out file rows that cannot be used.
OPT_OUT_QUARANTINE = ("loyalty", "opt_outs")


@dataclass(frozen=True)
class SourceRules:
    source: str
    enroll_after: date | None = None
    sms_double_opt_in_after: date | None = None


def rules_from_config(config: AppConfig) -> list[SourceRules]:
    """The sources that feed loyalty or SMS: age-gated ones with at least one rule date.

    The config already rejects a rule date without the age gate; this is the second lock.
    """
    return [
        SourceRules(s.name, s.enroll_after, s.sms_double_opt_in_after)
        for s in config.sources
        if s.age_gate_confirmed and (s.enroll_after or s.sms_double_opt_in_after)
    ]


def age_on(birth: date, day: date) -> int:
    """Completed years on `day` (a 29 February birthday comes on 1 March in other years)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _age_sql(birth: str, day: str) -> str:
    # Same as age_on: yyyymmdd difference, integer-divided by 10000.
    def ymd(d: str) -> str:
        return f"(year({d}) * 10000 + month({d}) * 100 + day({d}))"

    return f"(({ymd(day)} - {ymd(birth)}) // 10000)"


def _rules_table(con: Connection, rules: Sequence[SourceRules]) -> None:
    con.execute(
        "CREATE OR REPLACE TEMP TABLE loyalty_rules "
        "(source VARCHAR, enroll_after DATE, sms_after DATE)"
    )
    if rules:
        con.executemany(
            "INSERT INTO loyalty_rules VALUES (?, ?, ?)",
            [[r.source, r.enroll_after, r.sms_double_opt_in_after] for r in rules],
        )


def _qualifying_sql(rule: str, minimum_age: int) -> str:
    """Sales qualifying for `rule` (a loyalty_rules date column), with that rule date."""
    return f"""
        SELECT s.sale_key, s.source, s.contact_id, s.sold_at, s.sold_local_date,
               s.total, s.tax, r.{rule} AS rule_date
        FROM core.sales s
        JOIN loyalty_rules r ON r.source = s.source AND s.sold_local_date >= r.{rule}
        JOIN core.contacts c ON c.contact_id = s.contact_id
        WHERE NOT s.is_refund AND s.status = 'completed'
          AND (c.birth_date IS NULL
               OR {_age_sql("c.birth_date", "s.sold_local_date")} >= {int(minimum_age)})
    """


# ------------------------------------------------------------------------------ members


@dataclass
class MembersReport:
    enrolled: int = 0
    members: int = 0
    enrolled_by_source: dict[str, int] = field(default_factory=dict)


def enroll_members(
    con: Connection, rules: Sequence[SourceRules], *, minimum_age: int
) -> MembersReport:
    """Contacts with a qualifying sale on or after a source's `enroll_after` become members
    of that source (enrolled_at = their first qualifying sale). Existing members are kept
    as they are, whatever the rule says now."""
    report = MembersReport()
    with warehouse.transaction(con):
        _rules_table(con, rules)
        rows = con.execute(
            f"""
            INSERT INTO loyalty.members (contact_id, source, enrolled_at, reason, rule_date)
            SELECT q.contact_id, q.source, min(q.sold_at), '{ENROLL_REASON}', q.rule_date
            FROM ({_qualifying_sql("enroll_after", minimum_age)}) q
            WHERE NOT EXISTS (
                SELECT 1 FROM loyalty.members m
                WHERE m.contact_id = q.contact_id AND m.source = q.source)
            GROUP BY q.contact_id, q.source, q.rule_date
            RETURNING source
            """
        ).fetchall()
        for (source,) in rows:
            report.enrolled_by_source[source] = report.enrolled_by_source.get(source, 0) + 1
        report.enrolled = len(rows)
        report.members = con.execute("SELECT count(*) FROM loyalty.members").fetchone()[0]
    return report


def purge_members(con: Connection, source: str, reason: str) -> int:
    """Remove the members `source` enrolled for `reason`; returns how many were removed.

    Their ledger rows stay (history); if the rule still applies they re-enrol next run.
    """
    with warehouse.transaction(con):
        removed = con.execute(
            "DELETE FROM loyalty.members WHERE source = ? AND reason = ?", [source, reason]
        ).fetchone()[0]
    log.info("loyalty: purged %d member(s) of %s enrolled by %s", removed, source, reason)
    return int(removed)


# ------------------------------------------------------------------------------- points


@dataclass
class PointsReport:
    earned_new: int = 0
    earned_corrected: int = 0
    earned_voided: int = 0  # earned, then the sale stopped being completed
    reversed_new: int = 0
    reversed_corrected: int = 0
    rows: int = 0
    balance: float = 0.0

    @property
    def changed(self) -> int:
        return (
            self.earned_new
            + self.earned_corrected
            + self.earned_voided
            + self.reversed_new
            + self.reversed_corrected
        )


def post_points(
    con: Connection,
    rules: Sequence[SourceRules],
    *,
    points_per_currency_unit: int,
    minimum_age: int,
) -> PointsReport:
    """One `earn` row per qualifying sale on or after `enroll_after`, one `reverse` row per
    refund of an earning sale.

    Rounding: points = floor(base x points_per_unit) with base = total - tax (after discounts,
    before tax; never negative), so $12.99 earns 12 points at 1 point per unit. A refund
    reverses floor(|its base| x the original's points_per_unit), and the refunds of one sale
    never reverse more than it earned. A row keeps the rate it was earned at; a later change
    of a sale's amounts corrects its row in place, and a sale that is no longer completed
    (cancelled, declined, disputed, deleted) has its row set to 0 points, which also zeroes
    what its refunds reverse.
    """
    report = PointsReport()
    with warehouse.transaction(con):
        _rules_table(con, rules)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE pts_earn AS
            SELECT contact_id, sale_key, source, sold_at AS earned_at, rule_date,
                   greatest(coalesce(total, 0) - coalesce(tax, 0), 0)::DECIMAL(18,4) AS base
            FROM ({_qualifying_sql("enroll_after", minimum_age)})
            """
        )
        report.earned_new = _insert_new(con, "pts_earn", EARN, int(points_per_currency_unit))
        report.earned_corrected = con.execute(
            """
            UPDATE loyalty.points_ledger l
            SET base_amount = e.base, contact_id = e.contact_id,
                points = floor(e.base * l.points_per_unit)::DECIMAL(18,4)
            FROM pts_earn e
            WHERE l.sale_key = e.sale_key AND l.kind = 'earn'
              AND (l.base_amount IS DISTINCT FROM e.base OR l.contact_id <> e.contact_id)
            """
        ).fetchone()[0]
        # A sale cancelled, declined, disputed or deleted after it earned keeps its ledger row
        # (history) at 0 points; completed again, the correction above restores it.
        report.earned_voided = con.execute(
            """
            UPDATE loyalty.points_ledger l SET points = 0, base_amount = 0
            FROM core.sales s
            WHERE l.kind = 'earn' AND s.sale_key = l.sale_key
              AND NOT s.is_refund AND s.status <> 'completed'
              AND (l.points <> 0 OR l.base_amount <> 0)
            """
        ).fetchone()[0]
        _reversals(con)
        report.reversed_new = _insert_new(con, "pts_reverse", REVERSE, None)
        report.reversed_corrected = con.execute(
            """
            UPDATE loyalty.points_ledger l
            SET points = r.points, base_amount = r.base, contact_id = r.contact_id
            FROM pts_reverse r
            WHERE l.sale_key = r.sale_key AND l.kind = 'reverse'
              AND (l.points <> r.points OR l.base_amount IS DISTINCT FROM r.base
                   OR l.contact_id <> r.contact_id)
            """
        ).fetchone()[0]
        report.rows, balance = con.execute(
            "SELECT count(*), coalesce(sum(points), 0) FROM loyalty.points_ledger"
        ).fetchone()
        report.balance = float(balance)
        con.execute("DROP TABLE pts_earn")
        con.execute("DROP TABLE pts_reverse")
    return report


def _reversals(con: Connection) -> None:
    """pts_reverse: what each refund of an earning sale reverses (negative points)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE pts_reverse AS
        WITH refunds AS (
            SELECT r.sale_key, r.sold_at AS earned_at, e.contact_id, e.source, e.rule_date,
                   e.sale_key AS refunded_sale_key, e.points AS earned, e.points_per_unit,
                   abs(r.total - coalesce(r.tax, 0))::DECIMAL(18,4) AS base
            FROM core.sales r
            JOIN core.sales o ON o.source = r.source AND o.src_sale_id = r.refunded_sale_id
                             AND NOT o.is_refund
            JOIN loyalty.points_ledger e ON e.sale_key = o.sale_key AND e.kind = 'earn'
            WHERE r.is_refund
        ), raw AS (
            -- a refund without amounts reverses everything the sale earned
            SELECT *, coalesce(floor(base * points_per_unit), earned) AS raw_points
            FROM refunds
        ), running AS (
            SELECT *, sum(raw_points) OVER (
                PARTITION BY refunded_sale_key ORDER BY earned_at, sale_key) AS upto
            FROM raw
        )
        SELECT contact_id, sale_key, source, earned_at, rule_date, base, refunded_sale_key,
               points_per_unit,
               (least(upto - raw_points, earned) - least(upto, earned))::DECIMAL(18,4) AS points
        FROM running
        """
    )


def _insert_new(con: Connection, stage: str, kind: str, rate: int | None) -> int:
    points = f"floor(base * {rate})::DECIMAL(18,4)" if rate is not None else "points"
    per_unit = str(rate) if rate is not None else "points_per_unit"
    refunded = "NULL" if kind == EARN else "refunded_sale_key"
    return con.execute(
        f"""
        INSERT INTO loyalty.points_ledger (contact_id, sale_key, points, earned_at, source,
            kind, base_amount, points_per_unit, refunded_sale_key, rule_date)
        SELECT contact_id, sale_key, {points}, earned_at, source, '{kind}', base, {per_unit},
               {refunded}, rule_date
        FROM {stage} s
        WHERE NOT EXISTS (SELECT 1 FROM loyalty.points_ledger l WHERE l.sale_key = s.sale_key)
        """
    ).fetchone()[0]


# ----------------------------------------------------------------------------- opt-outs


@dataclass(frozen=True)
class OptOut:
    phone: str  # E.164
    keyword: str  # one of OPT_OUT_KEYWORDS
    opted_out_at: datetime | None = None


_NOT_LETTERS = re.compile(r"[^A-Z]")
_KEYWORDS = {_NOT_LETTERS.sub("", k): k for k in OPT_OUT_KEYWORDS}


def opt_out_keyword(raw: str | None) -> str | None:
    """'stop', ' Opt-Out ', 'optout' -> the canonical keyword; anything else -> None."""
    if raw is None:
        return None
    return _KEYWORDS.get(_NOT_LETTERS.sub("", str(raw).upper()))


def _timestamp(raw: str) -> datetime | None:
    text = raw.strip()
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))  # a date alone is midnight
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class OptOutFile:
    opt_outs: list[OptOut] = field(default_factory=list)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, raw)


def read_opt_out_file(path: Path) -> OptOutFile:
    """Parse an opt-out CSV (header: phone, keyword, opted_out_at; any order and case).

    Timestamps are ISO 8601; without an offset they are UTC. Rows with an invalid phone,
    a keyword that is not an opt-out or an unreadable time are returned as rejects.
    """
    result = OptOutFile()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        missing = [c for c in ("phone", "keyword") if c not in fields]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            raw = ",".join(str(v) for v in row.values() if v is not None)
            phone = phone_e164(row.get(fields["phone"]))
            keyword = opt_out_keyword(row.get(fields["keyword"]))
            if phone is None:
                result.rejects.append((line, f"phone {row.get(fields['phone'])!r} is invalid", raw))
                continue
            if keyword is None:
                reason = f"keyword {row.get(fields['keyword'])!r} is not an opt-out keyword"
                result.rejects.append((line, reason, raw))
                continue
            try:
                at = _timestamp(row.get(fields.get("opted_out_at", ""), "") or "")
            except ValueError:
                reason = f"opted_out_at {row.get(fields['opted_out_at'])!r} is not ISO 8601"
                result.rejects.append((line, reason, raw))
                continue
            result.opt_outs.append(OptOut(phone, keyword, at))
    return result


def record_opt_outs(
    con: Connection, source: str, opt_outs: Iterable[OptOut], *, now: datetime | None = None
) -> int:
    """Add opt-outs a source carries (or the opt-out file) to loyalty.opt_outs; returns how
    many phones were new for that source. Opt-outs are sticky: nothing here removes one, and
    the earliest known opt-out of a phone per source is the one kept."""
    now = now or datetime.now(UTC)
    rows = list(opt_outs)
    if not rows:
        return 0
    table = pa.table(
        {
            "phone": pa.array([o.phone for o in rows], pa.string()),
            "keyword": pa.array([o.keyword for o in rows], pa.string()),
            "opted_out_at": pa.array([o.opted_out_at for o in rows], pa.timestamp("us", "UTC")),
        }
    )
    con.register("opt_out_arrow", table)
    try:
        return con.execute(
            """
            INSERT INTO loyalty.opt_outs (phone, keyword, opted_out_at, source, recorded_at)
            SELECT phone, arg_min(keyword, coalesce(opted_out_at, 'infinity'::TIMESTAMPTZ)),
                   min(opted_out_at), ?, ?
            FROM opt_out_arrow a
            WHERE NOT EXISTS (
                SELECT 1 FROM loyalty.opt_outs o WHERE o.phone = a.phone AND o.source = ?)
            GROUP BY phone
            """,
            [source, now, source],
        ).fetchone()[0]
    finally:
        con.unregister("opt_out_arrow")


@dataclass
class OptOutReport:
    file: str | None = None
    missing: bool = False
    read: int = 0
    rejected: int = 0
    new: int = 0
    total: int = 0


def load_opt_out_file(
    con: Connection, path: Path | None, *, now: datetime | None = None
) -> OptOutReport:
    """Record the opt-out file's rows (one transaction); rejects go to ops.quarantine.

    A configured file that does not exist is reported as `missing` (the caller then holds
    back new SMS requests: it cannot tell who opted out).
    """
    report = OptOutReport(file=str(path) if path else None)
    if path is not None and not path.is_file():
        report.missing = True
    with warehouse.transaction(con):
        if path is not None and not report.missing:
            parsed = read_opt_out_file(path)
            report.read, report.rejected = len(parsed.opt_outs), len(parsed.rejects)
            report.new = record_opt_outs(con, OPT_OUT_FILE_SOURCE, parsed.opt_outs, now=now)
            rejects = pa.table(
                {
                    "partition_key": [path.name] * len(parsed.rejects),
                    "file": [path.name] * len(parsed.rejects),
                    "line": pa.array([r[0] for r in parsed.rejects], pa.int64()),
                    "record_id": pa.array([None] * len(parsed.rejects), pa.string()),
                    "reason": [r[1] for r in parsed.rejects],
                    "raw": [r[2] for r in parsed.rejects],
                },
                schema=QUARANTINE_SCHEMA,
            )
            warehouse.replace_quarantine(con, *OPT_OUT_QUARANTINE, [path.name], rejects)
        report.total = con.execute("SELECT count(DISTINCT phone) FROM loyalty.opt_outs").fetchone()[
            0
        ]
    return report


# ------------------------------------------------------------------------------ opt-ins


@dataclass
class OptInReport:
    queued: int = 0
    withdrawn: int = 0  # pending requests whose phone has since opted out
    skipped_opted_out: int = 0
    skipped_not_sms_capable: int = 0
    pending: int = 0
    queued_by_source: dict[str, int] = field(default_factory=dict)


def queue_opt_ins(
    con: Connection,
    rules: Sequence[SourceRules],
    *,
    minimum_age: int,
    now: datetime | None = None,
) -> OptInReport:
    """Queue one `pending` SMS double opt-in request per contact with a qualifying sale on or
    after a source's `sms_double_opt_in_after` and an SMS-capable phone.

    Never a second request for the same phone or contact (across runs and sources), never
    one for an opted-out phone; a pending request whose phone opts out becomes `opted_out`.
    The request names the source of the contact's earliest qualifying sale.
    """
    now = now or datetime.now(UTC)
    report = OptInReport()
    with warehouse.transaction(con):
        _rules_table(con, rules)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE sms_candidates AS
            WITH first_sale AS (
                -- arg_min, not first(... ORDER BY): ordered aggregates cannot spill.
                SELECT contact_id,
                       arg_min(source, (coalesce(sold_at, 'infinity'::TIMESTAMPTZ), source))
                           AS source,
                       min(sold_at) AS qualifying_sale_at
                FROM ({_qualifying_sql("sms_after", minimum_age)})
                GROUP BY contact_id
            )
            SELECT f.contact_id, c.phone, f.source, f.qualifying_sale_at,
                   c.phone IN (SELECT phone FROM loyalty.opt_outs) AS opted_out
            FROM first_sale f JOIN core.contacts c USING (contact_id)
            WHERE c.phone IS NOT NULL
              AND f.contact_id NOT IN (SELECT contact_id FROM loyalty.opt_in_requests)
              AND c.phone NOT IN (SELECT phone FROM loyalty.opt_in_requests)
            """
        )
        phones = [
            p
            for (p,) in con.execute(
                "SELECT DISTINCT phone FROM sms_candidates WHERE NOT opted_out"
            ).fetchall()
        ]
        # Python only for the phone-type look-up, over new candidates' distinct phones.
        capable = pa.table({"phone": pa.array([p for p in phones if sms_capable(p)], pa.string())})
        con.register("sms_capable_arrow", capable)
        con.execute("CREATE OR REPLACE TEMP TABLE sms_capable_phones AS FROM sms_capable_arrow")
        con.unregister("sms_capable_arrow")
        report.skipped_opted_out, report.skipped_not_sms_capable = con.execute(
            """
            SELECT count(*) FILTER (WHERE opted_out),
                   count(*) FILTER (WHERE NOT opted_out
                                    AND phone NOT IN (SELECT phone FROM sms_capable_phones))
            FROM sms_candidates
            """
        ).fetchone()
        rows = con.execute(
            f"""
            INSERT INTO loyalty.opt_in_requests
                (contact_id, phone, source, qualifying_sale_at, queued_at, status, updated_at)
            SELECT contact_id, phone, source, qualifying_sale_at, $now, '{PENDING}', $now
            FROM sms_candidates
            WHERE NOT opted_out AND phone IN (SELECT phone FROM sms_capable_phones)
            RETURNING source
            """,
            {"now": now},
        ).fetchall()
        for (source,) in rows:
            report.queued_by_source[source] = report.queued_by_source.get(source, 0) + 1
        report.queued = len(rows)
        report.withdrawn = con.execute(
            f"""
            UPDATE loyalty.opt_in_requests SET status = '{OPTED_OUT}', updated_at = ?
            WHERE status = '{PENDING}' AND phone IN (SELECT phone FROM loyalty.opt_outs)
            """,
            [now],
        ).fetchone()[0]
        report.pending = con.execute(
            f"SELECT count(*) FROM loyalty.opt_in_requests WHERE status = '{PENDING}'"
        ).fetchone()[0]
        con.execute("DROP TABLE sms_candidates")
        con.execute("DROP TABLE sms_capable_phones")
    return report

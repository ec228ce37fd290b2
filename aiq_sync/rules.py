"""Step 3 of the data flow in one call: identity, favourite stores, loyalty and SMS rules.

The order matters: contacts first (every rule keys on contact_id), opt-outs before opt-in
requests, members before points. Each step is its own transaction and idempotent, so a
crash half-way leaves consistent tables and the next run finishes the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from aiq_sync.config import AppConfig
from aiq_sync.favorites import FavoriteReport, assign_favorite_stores
from aiq_sync.identity import PII_COLUMNS, IdentityReport, resolve_contacts
from aiq_sync.loyalty import (
    MembersReport,
    OptInReport,
    OptOutReport,
    PointsReport,
    SourceRules,
    enroll_members,
    load_opt_out_file,
    post_points,
    queue_opt_ins,
    rules_from_config,
)
from aiq_sync.warehouse import Connection

log = logging.getLogger("aiq_sync.rules")


@dataclass
class RulesReport:
    rules: list[SourceRules]
    identity: IdentityReport
    favorites: FavoriteReport
    opt_outs: OptOutReport
    members: MembersReport
    points: PointsReport
    opt_ins: OptInReport | None  # None: held back because the opt-out file is missing

    @property
    def changed(self) -> bool:
        i = self.identity
        return bool(
            i.new_contacts
            or i.updated_contacts
            or i.removed_contacts
            or i.reassigned_personas
            or self.favorites.contacts_changed
            or self.opt_outs.new
            or self.members.enrolled
            or self.points.changed
            or (self.opt_ins and (self.opt_ins.queued or self.opt_ins.withdrawn))
        )


def apply_rules(
    con: Connection,
    config: AppConfig,
    *,
    now: datetime | None = None,
    as_of: date | None = None,
) -> RulesReport:
    now = now or datetime.now(UTC)
    rules = rules_from_config(config)
    settings = config.loyalty
    identity = resolve_contacts(con, now=now)
    favorites = assign_favorite_stores(con, as_of=as_of)
    opt_out_path = config.resolve(settings.opt_out_file) if settings.opt_out_file else None
    opt_outs = load_opt_out_file(con, opt_out_path, now=now)
    members = enroll_members(con, rules, minimum_age=settings.minimum_age)
    points = post_points(
        con,
        rules,
        points_per_currency_unit=settings.points_per_currency_unit,
        minimum_age=settings.minimum_age,
    )
    opt_ins = None
    if opt_outs.missing:
        log.warning(
            "loyalty.opt_out_file %s not found: no new SMS opt-in requests this run", opt_out_path
        )
    else:
        opt_ins = queue_opt_ins(con, rules, minimum_age=settings.minimum_age, now=now)
    return RulesReport(rules, identity, favorites, opt_outs, members, points, opt_ins)


# Invariants the asset checks verify: name -> (table, key that must be unique).
INVARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "contacts_unique": ("core.contacts", ("contact_id",)),
    "members_unique": ("loyalty.members", ("contact_id", "source")),
    "ledger_unique": ("loyalty.points_ledger", ("sale_key",)),
    # Not per contact: two contacts that each had a request may merge into one later.
    "one_request_per_phone": ("loyalty.opt_in_requests", ("phone",)),
}


def duplicate_count(con: Connection, invariant: str) -> tuple[int, list[tuple]]:
    """How many keys of an invariant's table have more than one row, and up to 5 of them."""
    table, keys = INVARIANTS[invariant]
    cols = ", ".join(keys)
    dupes = con.execute(
        f"SELECT {cols}, count(*) AS n FROM {table} GROUP BY ALL HAVING count(*) > 1 "
        f"ORDER BY n DESC, {cols}"
    ).fetchall()
    return len(dupes), dupes[:5]


def unlinked_personas(con: Connection) -> int:
    """Personas with PII but no contact (should be 0 right after resolve_contacts)."""
    has_pii = " OR ".join(f"{c} IS NOT NULL" for c in PII_COLUMNS)
    return con.execute(
        f"SELECT count(*) FROM core.personas WHERE contact_id IS NULL AND ({has_pii})"
    ).fetchone()[0]


def pending_after_opt_out(con: Connection) -> int:
    return con.execute(
        "SELECT count(*) FROM loyalty.opt_in_requests WHERE status = 'pending' "
        "AND phone IN (SELECT phone FROM loyalty.opt_outs)"
    ).fetchone()[0]

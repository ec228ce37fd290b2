"""Identity and the per-source rules as one Dagster step after the core tables.

All logic lives in `aiq_sync.rules`; this module only runs it in the DuckDB writer pool and
turns its report into materialisation metadata and asset checks. Metadata holds counts and
contact ids, never phones, e-mails or names.
"""

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import dagster as dg
from dagster import AssetExecutionContext

from aiq_sync import rules, warehouse
from aiq_sync.config import AppConfig
from aiq_sync.rules import RulesReport, apply_rules
from assets.metadata import markdown_table
from assets.resources import DUCKDB_WRITER_POOL, WarehouseResource

LOYALTY_KEYS = {
    "core.contacts": dg.AssetKey(["core", "contacts"]),
    "loyalty.members": dg.AssetKey(["loyalty", "members"]),
    "loyalty.points_ledger": dg.AssetKey(["loyalty", "points_ledger"]),
    "loyalty.opt_in_requests": dg.AssetKey(["loyalty", "opt_in_requests"]),
}
DESCRIPTIONS = {
    "core.contacts": "One row per person: personas merged by shared phone or e-mail, with a "
    "stable contact_id and favourite store (also sets core.personas / core.sales.contact_id).",
    "loyalty.members": "Contacts enrolled by a source's enroll_after date (sticky; purged only "
    "by `aiq-sync loyalty purge`).",
    "loyalty.points_ledger": "One earn row per qualifying sale and one reverse row per refund "
    "of an earning sale.",
    "loyalty.opt_in_requests": "One SMS double opt-in request per phone, never for opted-out "
    "phones.",
}


class Check(NamedTuple):
    table: str
    name: str
    invariant: str | None  # a uniqueness rule in aiq_sync.rules.INVARIANTS, else special
    description: str


CHECKS = (
    Check("core.contacts", "unique_contact_id", "contacts_unique", "one row per contact_id"),
    Check("core.contacts", "every_persona_linked", None, "every persona with PII has a contact"),
    Check(
        "loyalty.members",
        "one_membership_per_source",
        "members_unique",
        "one row per (contact, source)",
    ),
    Check("loyalty.points_ledger", "one_row_per_sale", "ledger_unique", "one row per sale_key"),
    Check(
        "loyalty.opt_in_requests",
        "one_request_per_phone",
        "one_request_per_phone",
        "never two requests for one phone",
    ),
    Check(
        "loyalty.opt_in_requests",
        "none_pending_after_opt_out",
        None,
        "no pending request for an opted-out phone",
    ),
    Check(
        "loyalty.opt_in_requests",
        "opt_out_file_read",
        None,
        "the configured opt-out file was found and read",
    ),
)


def build_loyalty(config: AppConfig, upstream: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            key,
            deps=list(upstream),
            group_name="core" if table == "core.contacts" else "loyalty",
            kinds={"duckdb"},
            description=DESCRIPTIONS[table],
            automation_condition=dg.AutomationCondition.eager(),
        )
        for table, key in LOYALTY_KEYS.items()
    ]
    check_specs = [
        dg.AssetCheckSpec(c.name, asset=LOYALTY_KEYS[c.table], description=c.description)
        for c in CHECKS
    ]

    @dg.multi_asset(
        name="loyalty_rules",
        specs=specs,
        check_specs=check_specs,
        pool=DUCKDB_WRITER_POOL,
        description="Resolve contacts, favourite stores, loyalty members, points and SMS "
        "opt-in requests from the canonical tables and the per-source rule dates.",
    )
    def loyalty_rules(context: AssetExecutionContext, duckdb: WarehouseResource) -> Iterator:
        with duckdb.get_connection() as con:
            for version in warehouse.migrate(con):
                context.log.info(f"warehouse migrated to version {version}")
            report = apply_rules(con, config)
            if report.opt_ins is None:
                context.log.warning(
                    f"opt-out file {report.opt_outs.file} not found: "
                    "no new SMS opt-in requests queued this run"
                )
            context.log.info("rules applied" if report.changed else "rules applied: no change")
            yield from _results(con, config, report)
            yield from _checks(con, report)

    return loyalty_rules


def _results(
    con: warehouse.Connection, config: AppConfig, report: RulesReport
) -> Iterator[dg.MaterializeResult]:
    counts = warehouse.table_counts(con, list(LOYALTY_KEYS))
    identity, favorites = report.identity, report.favorites
    yield dg.MaterializeResult(
        asset_key=LOYALTY_KEYS["core.contacts"],
        metadata={
            "rows": counts["core.contacts"],
            **identity.as_metadata(),
            "merged_ids": [f"{old}->{new}" for old, new in identity.merged[:20]],
            **favorites.as_metadata(),
        },
    )
    dates = {r.source: r for r in report.rules}
    members = report.members
    by_source = con.execute(
        "SELECT source, count(*) FROM loyalty.members GROUP BY source ORDER BY source"
    ).fetchall()
    yield dg.MaterializeResult(
        asset_key=LOYALTY_KEYS["loyalty.members"],
        metadata={
            "rows": counts["loyalty.members"],
            "enrolled_this_run": members.enrolled,
            "minimum_age": config.loyalty.minimum_age,
            "by_source": markdown_table(
                ["source", "enroll_after now", "members", "enrolled this run"],
                [
                    (
                        source,
                        dates[source].enroll_after if source in dates else "(no rule)",
                        n,
                        members.enrolled_by_source.get(source, 0),
                    )
                    for source, n in by_source
                ],
            ),
        },
    )
    points = report.points
    yield dg.MaterializeResult(
        asset_key=LOYALTY_KEYS["loyalty.points_ledger"],
        metadata={
            "rows": counts["loyalty.points_ledger"],
            "earn_rows_new": points.earned_new,
            "earn_rows_corrected": points.earned_corrected,
            "earn_rows_voided": points.earned_voided,
            "reverse_rows_new": points.reversed_new,
            "reverse_rows_corrected": points.reversed_corrected,
            "points_balance": points.balance,
            "points_per_currency_unit": config.loyalty.points_per_currency_unit,
        },
    )
    opt_ins, opt_outs = report.opt_ins, report.opt_outs
    metadata: dict[str, object] = {
        "rows": counts["loyalty.opt_in_requests"],
        "opt_outs_total": opt_outs.total,
        "opt_outs_new": opt_outs.new,
        "opt_out_file_rows_rejected": opt_outs.rejected,
        "held_back": opt_ins is None,
    }
    if opt_ins is not None:
        metadata.update(
            {
                "queued_this_run": opt_ins.queued,
                "withdrawn_after_opt_out": opt_ins.withdrawn,
                "pending": opt_ins.pending,
                "skipped_opted_out": opt_ins.skipped_opted_out,
                "skipped_not_sms_capable": opt_ins.skipped_not_sms_capable,
            }
        )
    yield dg.MaterializeResult(asset_key=LOYALTY_KEYS["loyalty.opt_in_requests"], metadata=metadata)


def _checks(con: warehouse.Connection, report: RulesReport) -> Iterator[dg.AssetCheckResult]:
    for table, name, invariant, description in CHECKS:
        metadata: dict[str, object] = {}
        if invariant is not None:
            bad, examples = rules.duplicate_count(con, invariant)
            # Keys only when they are ids; a phone is personal data.
            if invariant != "one_request_per_phone":
                metadata["examples"] = [list(map(str, e)) for e in examples]
        elif name == "every_persona_linked":
            bad = rules.unlinked_personas(con)
        elif name == "none_pending_after_opt_out":
            bad = rules.pending_after_opt_out(con)
        else:
            bad = int(report.opt_outs.missing)
            metadata["file"] = report.opt_outs.file or "(none configured)"
        metadata["violations"] = bad
        yield dg.AssetCheckResult(
            asset_key=LOYALTY_KEYS[table],
            check_name=name,
            passed=bad == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=description if bad == 0 else f"{bad} violation(s): {description}",
            metadata=metadata,
        )

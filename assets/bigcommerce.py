"""Dagster asset for BigCommerce contact sync: `<source>/contact_sync`.

Runs after core/personas, in the source's API pool (it spends the store's rate limit). It holds
DuckDB only to plan and to record, never while requests are in flight. A frozen source or one
with `sync_contacts` off is skipped with metadata saying why, and makes no request. All rules
live in connectors/bigcommerce/contact_sync.py. Metadata holds counts and persona keys, never
e-mails, phones or names.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
from dagster import AssetExecutionContext

from aiq_sync import warehouse
from aiq_sync.config import AppConfig, BigCommerceSource
from assets.api_source import pool_for
from assets.resources import WarehouseResource
from connectors.bigcommerce import contact_sync as cs
from connectors.bigcommerce.client import open_client

PERSONAS = dg.AssetKey(["core", "personas"])


def contact_sync_key(source: BigCommerceSource) -> dg.AssetKey:
    return dg.AssetKey([source.name, "contact_sync"])


def build_contact_sync(config: AppConfig, source: BigCommerceSource) -> dg.AssetsDefinition:
    tz = config.source_timezone(source)

    @dg.asset(
        key=contact_sync_key(source),
        deps=[PERSONAS],
        pool=pool_for(source),
        group_name=source.name.replace("-", "_"),
        kinds={"bigcommerce"},
        description=(
            f"Shoppers of other sources first seen since contact sync was enabled, with no "
            f"{source.name} customer sharing their e-mail or phone, created as store customers "
            "(POST /v3/customers, 10 per request; existing customers are never modified)."
        ),
        tags={"source": source.name, "source_type": source.source_type},
    )
    def contact_sync(
        context: AssetExecutionContext, duckdb: WarehouseResource
    ) -> dg.MaterializeResult:
        if source.freeze:
            context.log.info(f"{source.name} is frozen: contact sync skipped, no request made")
            return _skipped("frozen (use last backup): no request made")
        today = datetime.now(ZoneInfo(tz)).date()
        with duckdb.get_connection() as con:
            warehouse.migrate(con)
            if not source.sync_contacts:
                cs.forget_enabled(con, source.name)
                return _skipped("sync_contacts is off")
            enabled = cs.ensure_enabled(con, source.name, today)
            plan = cs.plan_contact_sync(con, source, enabled_on=enabled, timezone=tz)
        context.log.info(
            f"{source.name}: contact sync enabled on {enabled}: {len(plan.to_create)} to "
            f"create, {len(plan.matched)} matched, {len(plan.skipped)} skipped"
        )
        with open_client(source) as client:
            report = cs.push_contacts(client, plan)
            stats = client.stats.as_dict()
        with duckdb.get_connection() as con:
            cs.record_results(con, report)
        metadata = {**report.as_metadata(), "enabled_on": enabled.isoformat(), "http": stats}
        for key, why, _ in report.rejected:
            context.log.warning(f"{source.name}: {key} rejected: {cs.mask_emails(why)}")
        if report.error:
            raise dg.Failure(
                description=f"{source.name}: contact sync stopped: {cs.mask_emails(report.error)} "
                f"({len(report.created)} created before that, recorded)",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata)

    return contact_sync


def _skipped(why: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"skipped": why, "requests": 0, "created": 0})

"""The single-writer load step: landed partitions of every source -> canonical tables."""

import logging
from collections.abc import Iterator, Sequence

import dagster as dg
from dagster import AssetExecutionContext

from aiq_sync import reports, warehouse
from aiq_sync.canonical import NATURAL_KEYS, NormaliseContext
from aiq_sync.config import AppConfig
from aiq_sync.landing import Landing
from aiq_sync.loader import load_source
from assets.metadata import markdown_table
from assets.resources import DUCKDB_WRITER_POOL, WarehouseResource
from connectors.registry import has_connector, normalisers_for

log = logging.getLogger("aiq_sync.assets")

LOAD_AFTER_LANDING = dg.AutomationCondition.eager().without(
    ~dg.AutomationCondition.any_deps_missing()
)

CORE_KEYS = {
    "core.personas": dg.AssetKey(["core", "personas"]),
    "core.sales": dg.AssetKey(["core", "sales"]),
    "core.sale_items": dg.AssetKey(["core", "sale_items"]),
    "core.products": dg.AssetKey(["core", "products"]),
    "core.inventory": dg.AssetKey(["core", "inventory"]),
    "core.stores": dg.AssetKey(["core", "stores"]),
    "ops.quarantine": dg.AssetKey(["ops", "quarantine"]),
    "ops.unmapped_locations": dg.AssetKey(["ops", "unmapped_locations"]),
}
DESCRIPTIONS = {
    "core.personas": "One row per (source, customer id): cleaned names, e-mail, E.164 phone.",
    "core.sales": "One row per sale or refund; totals in DECIMAL, sold_at in UTC.",
    "core.sale_items": "One row per (sale, line); a line re-sent later counts once.",
    "core.products": "Latest known product facts per (source, product id).",
    "core.inventory": "Latest stock snapshot per (source, location, product).",
    "core.stores": "Retail stores from the config with their location keys.",
    "ops.quarantine": "Rows (or whole files) that could not load, with file, line and reason.",
    "ops.unmapped_locations": "Location keys with sales but no store in the config.",
}


def normalise_context(config: AppConfig, source_name: str) -> NormaliseContext:
    source = config.source(source_name)
    mapping = {key: store for (src, key), store in config.store_map().items() if src == source_name}
    return NormaliseContext(
        source=source.name,
        source_type=source.source_type,
        timezone=config.source_timezone(source),
        store_map=mapping,
    )


def build_core(config: AppConfig, landing_keys: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            key,
            deps=landing_keys,
            group_name="core",
            kinds={"duckdb"},
            description=DESCRIPTIONS[table],
            # Runs after any landing partition lands (the automation sensor). Unlike plain
            # eager, a partition that never landed (a failed or vanished file) does not hold
            # back the load of everything else.
            automation_condition=LOAD_AFTER_LANDING,
        )
        for table, key in CORE_KEYS.items()
    ]
    checks = [
        dg.AssetCheckSpec(
            "unique_keys", asset=CORE_KEYS[t], description=f"one row per {', '.join(k)}"
        )
        for t, k in NATURAL_KEYS.items()
    ] + [
        dg.AssetCheckSpec(
            "every_location_mapped",
            asset=CORE_KEYS["ops.unmapped_locations"],
            description="every location key with sales maps to a store (WARN lists the others)",
        ),
        dg.AssetCheckSpec(
            "quarantine_share",
            asset=CORE_KEYS["ops.quarantine"],
            description=f"no source quarantines over {config.quarantine_threshold:.0%} of rows",
        ),
    ]

    @dg.multi_asset(
        name="core_tables",
        specs=specs,
        check_specs=checks,
        pool=DUCKDB_WRITER_POOL,
        description="Load every source's new or re-landed partitions into the canonical tables.",
    )
    def core_tables(context: AssetExecutionContext, duckdb: WarehouseResource) -> Iterator:
        landing = Landing(config.landing_path)
        load_reports = {}
        with duckdb.get_connection() as con:  # closed even when a step fails
            for version in warehouse.migrate(con):
                context.log.info(f"warehouse migrated to version {version}")
            with warehouse.transaction(con):
                warehouse.refresh_stores(
                    con,
                    [
                        (s.id, s.name, [f"{src}:{k}" for src in s.keys for k in s.keys_for(src)])
                        for s in config.stores
                    ],
                )
            for source in config.sources:
                ctx = normalise_context(config, source.name)
                if not has_connector(source.source_type):
                    context.log.warning(f"{source.name}: no connector for {source.source_type}")
                    continue
                for normaliser in normalisers_for(source.source_type):
                    report = load_source(con, landing, normaliser, ctx, progress=context.log.info)
                    load_reports[f"{source.name}/{normaliser.entity}"] = report.as_metadata()
                    for problem in report.unreadable:
                        context.log.warning(f"{source.name}: whole file quarantined: {problem}")
            counts = reports.table_counts(con)
            yield from _results(con, counts, load_reports)
            yield from _checks(con, config)

    return core_tables


def _results(con: warehouse.Connection, counts: dict[str, int], load_reports: dict) -> Iterator:
    for table, key in CORE_KEYS.items():
        metadata: dict[str, object] = {"rows": counts[table], "table": table}
        if table == "core.sales":
            metadata["loads"] = load_reports
        if table == "ops.quarantine":
            metadata["reasons"] = markdown_table(
                ["source", "reason", "rows"], reports.quarantine_reasons(con)
            )
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)


def _checks(con: warehouse.Connection, config: AppConfig) -> Iterator[dg.AssetCheckResult]:
    for table in NATURAL_KEYS:
        dupes, examples = reports.duplicate_keys(con, table)
        yield dg.AssetCheckResult(
            asset_key=CORE_KEYS[table],
            check_name="unique_keys",
            passed=dupes == 0,
            metadata={"duplicate_keys": dupes, "examples": [list(map(str, e)) for e in examples]},
        )
    unmapped = reports.unmapped_locations(con)
    yield dg.AssetCheckResult(
        asset_key=CORE_KEYS["ops.unmapped_locations"],
        check_name="every_location_mapped",
        passed=not unmapped,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "unmapped: " + ", ".join(f"{s}:{k} ({n} sales)" for s, k, n in unmapped)
            if unmapped
            else "all location keys map to stores"
        ),
        metadata={"unmapped": markdown_table(["source", "location_key", "sales"], unmapped)},
    )
    shares = reports.quarantine_shares(con)
    over = [q for q in shares if q.share > config.quarantine_threshold]
    yield dg.AssetCheckResult(
        asset_key=CORE_KEYS["ops.quarantine"],
        check_name="quarantine_share",
        passed=not over,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "over threshold: " + ", ".join(f"{q.source} {q.share:.1%}" for q in over)
            if over
            else f"all sources at or under {config.quarantine_threshold:.0%}"
        ),
        metadata={
            "shares": markdown_table(
                ["source", "rows read", "quarantined", "share"],
                [(q.source, q.rows_in, q.quarantined, f"{q.share:.2%}") for q in shares],
            ),
            "threshold": config.quarantine_threshold,
        },
    )

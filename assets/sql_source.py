"""Dagster assets for SQL sources: `<source>/lines`, daily partitions in the source's time zone,
landed like an API entity (single-run back-fill, nightly schedule from the watermark, the
pool `api_<source>` so two runs never query the retailer's database at once), but through
`land_sql_days`: one ordered pass with one day partition open at a time. A frozen source
opens no connection."""

from datetime import date

import dagster as dg
from dagster import AssetExecutionContext

from aiq_sync.config import AppConfig, SqlSource
from aiq_sync.landing import Landing
from assets.api_source import daily_partitions, nightly_schedule, pool_for
from assets.file_drop import frozen_result
from connectors.sql import land_sql_days, open_extractors


def build_sql_source(
    config: AppConfig, source: SqlSource
) -> tuple[list[dg.AssetsDefinition], list, list]:
    landing = Landing(config.landing_path)
    tz = config.source_timezone(source)
    partitions = daily_partitions(config, source)
    name = source.name.replace("-", "_")
    assets = [_entity_asset(source, entity, landing, tz, partitions) for entity in source.entities]
    job = dg.define_asset_job(
        f"{name}_extract",
        selection=dg.AssetSelection.assets(*assets),
        description=f"Extract {source.name} by day window",
    )

    nightly = nightly_schedule(
        config,
        source,
        job,
        partitions,
        landing,
        list(source.entities),
        description=f"Every night: {source.name} from its last landed day to today, in one run",
    )

    return assets, [job], [nightly]


def _entity_asset(
    source: SqlSource,
    entity: str,
    landing: Landing,
    tz: str,
    partitions: dg.DailyPartitionsDefinition,
) -> dg.AssetsDefinition:
    spec = source.entities[entity]
    where = spec.table or "the configured query"

    @dg.asset(
        key=[source.name, entity],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=source.name.replace("-", "_"),
        pool=pool_for(source),
        kinds={"sql", "parquet"},
        description=f"Sale lines of {where} by {spec.cursor} day, landed as flat-file raw "
        "lines (server-side batches; one partition per source-local day).",
        tags={"source": source.name, "source_type": source.source_type},
    )
    def land(context: AssetExecutionContext) -> dg.MaterializeResult:
        if source.freeze:  # before any connection exists
            context.log.info(f"{source.name} is frozen: no query made")
            return frozen_result(landing, source.name)
        days = [date.fromisoformat(k) for k in context.partition_keys]
        context.log.info(
            f"{source.name}/{entity}: reading {days[0]}..{days[-1]} "
            f"(+{source.lookback_days} day look-back) in one ordered pass"
        )
        with open_extractors(source, tz) as extractors:
            extractor = extractors[entity]
            manifests = land_sql_days(
                landing, source.name, extractor, days, tz, source.lookback_days
            )
            stats = extractor.request_stats()
        rows = sum(m.rows for m in manifests)
        context.log.info(
            f"{source.name}/{entity}: landed {rows} rows in {len(manifests)} partition(s) "
            f"with {stats['requests']} queries"
        )
        first, last = manifests[0], manifests[-1]
        return dg.MaterializeResult(
            metadata={
                "rows": rows,
                "partitions": len(manifests),
                "window_start": first.window_start.isoformat() if first.window_start else "",
                "window_end": last.window_end.isoformat() if last.window_end else "",
                "requests": stats["requests"],
                "batches": stats["batches"],
                "frozen": False,
            }
        )

    return land

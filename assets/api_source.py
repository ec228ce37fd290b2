"""Dagster assets for API sources: one landing asset per entity.

Time-filtered entities get daily partitions in the source's time zone; a run may cover a
range of days (single-run back-fill policy) and extracts it in one paging pass. Snapshot
entities (inventory, store) are unpartitioned: every run lands a snapshot. All of a
source's extraction runs share the pool `api_<source>` so they never compete for its
rate limit. A frozen source makes no request at all.
"""

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from dagster import AssetExecutionContext

from aiq_sync.config import AppConfig, SourceBase
from aiq_sync.extract import ApiConnector, EntitySpec, land_days, land_entity, resume_day
from aiq_sync.landing import Landing, Manifest
from assets.file_drop import frozen_result

ASSET_PARTITION_RANGE_START = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def pool_for(source: SourceBase) -> str:
    return f"api_{source.name.replace('-', '_')}"


def daily_partitions(config: AppConfig, source: SourceBase) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's (partial) day exists, so a nightly run also lands what happened
    # since midnight; tomorrow's run re-lands it complete.
    return dg.DailyPartitionsDefinition(
        start_date=source.start_date.isoformat(),
        timezone=config.source_timezone(source),
        end_offset=1,
    )


def nightly_schedule(
    config: AppConfig,
    source: SourceBase,
    job: dg.JobDefinition | Any,  # define_asset_job's type is not public
    partitions: dg.DailyPartitionsDefinition,
    landing: Landing,
    entities: list[str],
    description: str,
) -> dg.ScheduleDefinition:
    """The source's nightly run: one range run from its watermark (the last landed day) to
    today, so a run after a freeze or an outage back-fills the gap; normally that is
    yesterday and today so far."""

    @dg.schedule(
        name=f"{source.name.replace('-', '_')}_nightly",
        job=job,
        cron_schedule=config.schedule.cron,
        execution_timezone=config.schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if source.freeze:
            return dg.SkipReason(f"{source.name} is frozen (use last backup)")
        keys = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
        resume = resume_day(landing, source.name, entities, source.start_date).isoformat()
        start = max(min(resume, keys[-2] if len(keys) > 1 else keys[-1]), keys[0])
        end = keys[-1]
        return dg.RunRequest(
            run_key=f"{start}..{end}",
            tags={ASSET_PARTITION_RANGE_START: start, ASSET_PARTITION_RANGE_END: end},
        )

    return nightly


def _metadata(manifests: list[Manifest], stats: dict, frozen: bool = False) -> dict[str, object]:
    first, last = manifests[0], manifests[-1]
    return {
        "rows": sum(m.rows for m in manifests),
        "partitions": len(manifests),
        "window_start": first.window_start.isoformat() if first.window_start else "",
        "window_end": last.window_end.isoformat() if last.window_end else "",
        "requests": sum(m.requests for m in manifests),
        "http": stats,
        "frozen": frozen,
    }


def build_api_source(
    config: AppConfig, source: SourceBase, connector: ApiConnector
) -> tuple[list[dg.AssetsDefinition], list, list]:
    landing = Landing(config.landing_path)
    tz = config.source_timezone(source)
    partitions = daily_partitions(config, source)
    assets = [
        _entity_asset(config, source, connector, spec, landing, tz, partitions)
        for spec in connector.entities
    ]
    name = source.name.replace("-", "_")
    windowed = [a for a, s in zip(assets, connector.entities, strict=True) if not s.snapshot]
    snapshots = [a for a, s in zip(assets, connector.entities, strict=True) if s.snapshot]
    jobs: list = []
    schedules = []
    if windowed:
        extract_job = dg.define_asset_job(
            f"{name}_extract",
            selection=dg.AssetSelection.assets(*windowed),
            description=f"Extract {source.name} by day window",
        )
        jobs.append(extract_job)

        entities = [s.name for s in connector.entities if not s.snapshot]
        nightly = nightly_schedule(
            config,
            source,
            extract_job,
            partitions,
            landing,
            entities,
            description=f"Every night: {source.name} from its last landed day to today, in one run",
        )
        schedules.append(nightly)
    if snapshots:
        snapshot_job = dg.define_asset_job(
            f"{name}_snapshot",
            selection=dg.AssetSelection.assets(*snapshots),
            description=f"Snapshot {source.name}'s inventory and store facts",
        )
        jobs.append(snapshot_job)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_snapshot_nightly",
                job=snapshot_job,
                cron_schedule=config.schedule.cron,
                execution_timezone=config.schedule.timezone,
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
    return assets, jobs, schedules


def _entity_asset(
    config: AppConfig,
    source: SourceBase,
    connector: ApiConnector,
    spec: EntitySpec,
    landing: Landing,
    tz: str,
    partitions: dg.DailyPartitionsDefinition,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[source.name, spec.name],
        partitions_def=None if spec.snapshot else partitions,
        backfill_policy=None if spec.snapshot else dg.BackfillPolicy.single_run(),
        group_name=source.name.replace("-", "_"),
        pool=pool_for(source),
        kinds={connector.source_type, "parquet"},
        description=spec.description,
        tags={"source": source.name, "source_type": connector.source_type},
    )
    def land(context: AssetExecutionContext) -> dg.MaterializeResult:
        if source.freeze:  # before any client exists: zero requests
            context.log.info(f"{source.name} is frozen: no request made")
            return frozen_result(landing, source.name)
        with connector.open(source) as extractors:
            extractor = extractors[spec.name]
            if spec.snapshot:
                manifests = [land_entity(landing, source.name, extractor, _today(tz), None)]
            else:
                days = [date.fromisoformat(k) for k in context.partition_keys]
                context.log.info(
                    f"{source.name}/{spec.name}: extracting {days[0]}..{days[-1]} "
                    f"(+{source.lookback_days} day look-back) in one pass"
                )
                manifests = land_days(
                    landing, source.name, extractor, days, tz, source.lookback_days
                )
            stats = extractor.request_stats()
        metadata = _metadata(manifests, stats)
        context.log.info(
            f"{source.name}/{spec.name}: landed {metadata['rows']} records in "
            f"{len(manifests)} partition(s) with {metadata['requests']} requests"
        )
        return dg.MaterializeResult(metadata=metadata)

    return land


def _today(tz: str) -> str:
    return datetime.now(ZoneInfo(tz)).date().isoformat()

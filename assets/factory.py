"""Build the whole Dagster code location from an `AppConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from aiq_sync.config import AppConfig, BigCommerceSource, FileDropSource, SqlSource
from assets.api_source import build_api_source, daily_partitions
from assets.bigcommerce import build_contact_sync
from assets.core import CORE_KEYS, build_core
from assets.file_drop import build_file_drop, partitions_for
from assets.loyalty import LOYALTY_KEYS, build_loyalty
from assets.resources import WarehouseResource, duckdb_resource
from assets.sql_source import build_sql_source
from connectors.registry import API_CONNECTORS


@dataclass
class SyncParts:
    """Everything the factory builds, addressable by source (the CLI runner needs this)."""

    # source name -> its landing assets (one for a file drop, one per entity for an API)
    landing: dict[str, list[dg.AssetsDefinition]] = field(default_factory=dict)
    partitions: dict[str, dg.PartitionsDefinition] = field(default_factory=dict)
    core: dg.AssetsDefinition | None = None
    loyalty: dg.AssetsDefinition | None = None
    # Assets that write back to a source (BigCommerce contact sync), after the core tables.
    outbound: list[dg.AssetsDefinition] = field(default_factory=list)
    jobs: list[dg.UnresolvedAssetJobDefinition] = field(default_factory=list)
    sensors: list[dg.SensorDefinition] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)
    resources: dict[str, WarehouseResource] = field(default_factory=dict)


def build_parts(config: AppConfig) -> SyncParts:
    parts = SyncParts(resources={"duckdb": duckdb_resource(config)})
    for source in config.sources:
        if isinstance(source, FileDropSource):
            land, job, sensor = build_file_drop(config, source)
            parts.landing[source.name] = [land]
            parts.partitions[source.name] = partitions_for(source)
            parts.jobs.append(job)
            parts.sensors.append(sensor)
        elif isinstance(source, SqlSource):
            assets, jobs, schedules = build_sql_source(config, source)
            parts.landing[source.name] = assets
            parts.partitions[source.name] = daily_partitions(config, source)
            parts.jobs.extend(jobs)
            parts.schedules.extend(schedules)
        elif source.source_type in API_CONNECTORS:
            assets, jobs, schedules = build_api_source(
                config, source, API_CONNECTORS[source.source_type]
            )
            parts.landing[source.name] = assets
            parts.partitions[source.name] = daily_partitions(config, source)
            parts.jobs.extend(jobs)
            parts.schedules.extend(schedules)
            if isinstance(source, BigCommerceSource):
                parts.outbound.append(build_contact_sync(config, source))
    landing_keys = [key for assets in parts.landing.values() for a in assets for key in a.keys]
    parts.core = build_core(config, landing_keys)
    parts.loyalty = build_loyalty(config, list(CORE_KEYS.values()))

    load_job = dg.define_asset_job(
        "load_warehouse",
        selection=dg.AssetSelection.assets(*CORE_KEYS.values(), *LOYALTY_KEYS.values()),
        description="Load everything landed into the canonical tables, then apply the rules.",
    )
    parts.jobs.append(load_job)
    # Runs the load step after landings (core assets are `eager`); on by default so a
    # dropped file reaches the warehouse without anyone clicking anything.
    parts.sensors.append(
        dg.AutomationConditionSensorDefinition(
            "load_after_landing",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=60,
        )
    )
    parts.schedules.append(
        dg.ScheduleDefinition(
            name="nightly_sync",
            job=load_job,
            cron_schedule=config.schedule.cron,
            execution_timezone=config.schedule.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Nightly load of everything landed since the last run.",
        )
    )
    return parts


def build_definitions(config: AppConfig) -> dg.Definitions:
    parts = build_parts(config)
    return dg.Definitions(
        assets=[a for assets in parts.landing.values() for a in assets]
        + [parts.core, parts.loyalty, *parts.outbound],
        jobs=parts.jobs,
        schedules=parts.schedules,
        sensors=parts.sensors,
        resources=parts.resources,
    )

"""`aiq-sync run`: the same assets the daemon runs, materialised in-process.

Each landing partition is one real Dagster run (visible in the UI when DAGSTER_HOME is set),
then one run of the load step. Prints a progress line per partition.
"""

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import dagster as dg

from aiq_sync.config import AppConfig, FileDropSource, SourceBase
from aiq_sync.extract import resume_day
from aiq_sync.landing import Landing
from aiq_sync.writer_lock import WarehouseLockTimeout, writer_lock
from assets.api_source import ASSET_PARTITION_RANGE_END, ASSET_PARTITION_RANGE_START
from assets.factory import SyncParts, build_parts
from connectors.file_drop import ENTITY, DropFile
from connectors.file_drop.location import open_location

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    landed: int = 0
    unchanged: int = 0
    failures: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    warned_checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.failed_checks


@contextmanager
def instance_scope(given: dg.DagsterInstance | None) -> Iterator[dg.DagsterInstance]:
    """`given`, else the persistent instance when DAGSTER_HOME is set (runs show in the UI),
    else a new ephemeral one, disposed on exit: an in-memory event log keeps every event of
    its runs (~15-20 MB for a two-year back-fill of five day-partitioned assets, measured
    alone; within the bench's noise in a full run), so one per source and one for the load
    instead of one for the whole sync."""
    if given is not None:
        yield given
    elif os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            yield instance
    else:
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            cause = error.cause.message.strip() if error.cause else ""
            messages.append((error.message.strip() + (" " + cause if cause else "")).strip())
    return "; ".join(messages) or "run failed"


def _frozen_line(landing: Landing, source: str, what: str) -> str:
    since = landing.last_extracted_at(source)
    label = since.isoformat() if since else "never"
    return f"{source}: frozen (use last backup) since {label}: {what}"


def _in_window(drop: DropFile, tz: str, start: date | None, end: date | None) -> bool:
    day = datetime.fromtimestamp(drop.mtime_ns / 1e9, ZoneInfo(tz)).date()
    return (start is None or day >= start) and (end is None or day <= end)


def run_sync(
    config: AppConfig,
    *,
    sources: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    force: bool = False,
    instance: dg.DagsterInstance | None = None,
    out: Callable[[str], None] = print,
) -> RunOutcome:
    warnings.filterwarnings("ignore", module="dagster")
    parts = build_parts(config)
    outcome = RunOutcome()
    landing = Landing(config.landing_path)
    selected = [config.source(name) for name in sources] if sources else config.sources
    for source in selected:
        with instance_scope(instance) as scoped:
            if isinstance(source, FileDropSource):
                _land_file_drop(
                    config, parts, source, landing, scoped, start, end, force, out, outcome
                )
            else:
                _land_api(config, parts, source, landing, scoped, start, end, out, outcome)
    # Landing never opens DuckDB; the load does: one writer process at a time, the others
    # wait here (Dagster pools do not span two `aiq-sync run` processes).
    try:
        with writer_lock(config.warehouse_path, on_wait=out), instance_scope(instance) as scoped:
            _load(parts, scoped, out, outcome)
    except WarehouseLockTimeout as exc:
        outcome.failures.append(f"load: {exc}")
        out(f"load: FAILED: {exc}")
    return outcome


def _land_file_drop(
    config: AppConfig,
    parts: SyncParts,
    source: FileDropSource,
    landing: Landing,
    instance: dg.DagsterInstance,
    start: date | None,
    end: date | None,
    force: bool,
    out: Callable[[str], None],
    outcome: RunOutcome,
) -> None:
    if source.freeze:
        out(_frozen_line(landing, source.name, "drop folder not read"))
        return
    tz = config.source_timezone(source)
    # Listing only (OneDrive: a delta query); each file is fetched by its own landing run.
    with open_location(config, source) as location:
        files = [f for f in location.list() if _in_window(f, tz, start, end)]
    landed = {
        m.partition_key: m.origin.get("fingerprint") for m in landing.manifests(source.name, ENTITY)
    }
    todo = [f for f in files if force or landed.get(f.name) != f.fingerprint]
    outcome.unchanged += len(files) - len(todo)
    out(f"{source.name}: {len(files)} files, {len(todo)} new or changed")
    partitions = parts.partitions[source.name]
    assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name
    instance.add_dynamic_partitions(partitions.name, [f.name for f in todo])
    width = len(str(len(todo)))
    for i, drop in enumerate(todo, 1):
        started = time.monotonic()
        result = dg.materialize(
            parts.landing[source.name],
            partition_key=drop.name,
            instance=instance,
            resources=parts.resources,
            run_config=QUIET,
            raise_on_error=False,
            tags={"aiq_sync/trigger": "cli"},
        )
        seconds = time.monotonic() - started
        prefix = f"[{i:>{width}}/{len(todo)}] {source.name}/{ENTITY} {drop.name}"
        if not result.success:
            message = _failure_text(result)
            outcome.failures.append(f"{source.name}/{ENTITY} {drop.name}: {message}")
            out(f"{prefix}: FAILED: {message}")
            continue
        outcome.landed += 1
        meta = result.asset_materializations_for_node(result.job_def.nodes[0].name)[0].metadata
        status = meta["status"].value
        if status == "unreadable":
            out(f"{prefix}: REJECTED WHOLE: {meta['error'].value} ({seconds:.2f}s)")
        elif status == "vanished":
            out(f"{prefix}: file disappeared before it was read; nothing landed")
        else:
            out(
                f"{prefix}: {meta['rows'].value} rows, "
                f"{meta['rows_unparseable'].value} unparseable ({seconds:.2f}s)"
            )


def _land_api(
    config: AppConfig,
    parts: SyncParts,
    source: SourceBase,
    landing: Landing,
    instance: dg.DagsterInstance,
    start: date | None,
    end: date | None,
    out: Callable[[str], None],
    outcome: RunOutcome,
) -> None:
    if source.freeze:
        out(_frozen_line(landing, source.name, "no request made"))
        return
    tz = config.source_timezone(source)
    today = datetime.now(ZoneInfo(tz)).date()
    windowed = [a for a in parts.landing[source.name] if a.partitions_def is not None]
    snapshots = [a for a in parts.landing[source.name] if a.partitions_def is None]
    runs: list[tuple[list[dg.AssetsDefinition], dict[str, str], str]] = []
    if windowed:
        entities = [a.key.path[-1] for a in windowed]
        first = start or resume_day(landing, source.name, entities, source.start_date)
        last = min(end or today, today)
        if first <= last:
            tags = {ASSET_PARTITION_RANGE_START: first.isoformat(),
                    ASSET_PARTITION_RANGE_END: last.isoformat()}  # fmt: skip
            runs.append((windowed, tags, f"{first}..{last}"))
    if snapshots:
        runs.append((snapshots, {}, "snapshot"))
    for assets, tags, label in runs:
        started = time.monotonic()
        result = dg.materialize(
            assets,
            instance=instance,
            resources=parts.resources,
            run_config=QUIET,
            raise_on_error=False,
            tags={"aiq_sync/trigger": "cli", **tags},
        )
        seconds = time.monotonic() - started
        if not result.success:
            message = _failure_text(result)
            outcome.failures.append(f"{source.name} {label}: {message}")
            out(f"{source.name} {label}: FAILED: {message}")
            continue
        # A range run records one materialisation per partition, all with the same metadata
        # (the whole pass): report each asset once.
        per_asset = {e.asset_key: e for e in result.get_asset_materialization_events()}
        for event in per_asset.values():
            meta = event.materialization.metadata
            outcome.landed += int(meta["partitions"].value)
            out(
                f"{event.asset_key.to_user_string()} {label}: {meta['rows'].value} records in "
                f"{meta['partitions'].value} partition(s), {meta['requests'].value} requests "
                f"({seconds:.1f}s)"
            )


def _load(
    parts: SyncParts, instance: dg.DagsterInstance, out: Callable[[str], None], outcome: RunOutcome
) -> None:
    assert parts.core is not None and parts.loyalty is not None
    progress = logging.getLogger("aiq_sync.loader")
    handler = _PrintHandler(out)
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        result = dg.materialize(
            [parts.core, parts.loyalty],
            instance=instance,
            resources=parts.resources,
            run_config=QUIET,
            raise_on_error=False,
            tags={"aiq_sync/trigger": "cli"},
        )
    finally:
        progress.removeHandler(handler)
    if not result.success:
        message = _failure_text(result)
        outcome.failures.append(f"load: {message}")
        out(f"load: FAILED: {message}")
        return
    for check in result.get_asset_check_evaluations():
        if check.passed:
            continue
        label = f"{check.asset_key.to_user_string()}:{check.check_name}: {check.description}"
        if check.severity == dg.AssetCheckSeverity.WARN:
            outcome.warned_checks.append(label)
        else:
            outcome.failed_checks.append(label)


class _PrintHandler(logging.Handler):
    def __init__(self, out: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out(record.getMessage())

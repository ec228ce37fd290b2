"""Dagster assets and sensor for flat-file drop sources: one dynamic partition per file."""

import json

import dagster as dg
from dagster import AssetExecutionContext, SensorEvaluationContext
from pydantic import BaseModel

from aiq_sync.config import AppConfig, FileDropSource
from aiq_sync.landing import Landing
from assets.metadata import markdown_table
from connectors.file_drop import ENTITY, DropFile
from connectors.file_drop.location import DropVanished, land_from_location, open_location

PREVIEW_COLUMNS = (
    "_line",
    "transaction_id",
    "item_id",
    "product_name",
    "quantity",
    "transaction_date",
    "location_id",
)  # no personal data in event logs


def partitions_for(source: FileDropSource) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{source.name.replace('-', '_')}__files")


def landing_key(source: FileDropSource) -> dg.AssetKey:
    return dg.AssetKey([source.name, ENTITY])


def frozen_result(landing: Landing, source_name: str) -> dg.MaterializeResult:
    since = landing.last_extracted_at(source_name)
    label = since.isoformat() if since else "never landed"
    return dg.MaterializeResult(
        metadata={"frozen": True, "frozen_since": label, "requests": 0, "rows": 0}
    )


def build_file_drop(config: AppConfig, source: FileDropSource):
    """The landing asset, its job and its sensor for one file-drop source."""
    partitions = partitions_for(source)
    landing = Landing(config.landing_path)
    kinds = {"csv", "parquet", "onedrive"} if source.is_onedrive else {"csv", "parquet"}

    @dg.asset(
        key=landing_key(source),
        partitions_def=partitions,
        group_name=source.name.replace("-", "_"),
        kinds=kinds,
        description=f"Raw lines of each drop file in {source.location}, landed as Parquet "
        "(one partition per file; re-landing a changed file replaces its partition).",
        tags={"source": source.name, "source_type": source.source_type},
    )
    def land(context: AssetExecutionContext) -> dg.MaterializeResult:
        if source.freeze:
            context.log.info(f"{source.name} is frozen: drop folder not read")
            return frozen_result(landing, source.name)
        name = context.partition_key
        with open_location(config, source) as location:
            # The file as it is now (the sensor may have listed an older version of it).
            drop = location.find(name)
            try:
                manifest = (
                    land_from_location(landing, source.name, location, drop) if drop else None
                )
            except DropVanished:
                manifest = None
            requests = int(location.request_stats().get("requests", 0))
            where = location.description
        if drop is None or manifest is None:
            # Deleted between the sensor and this run. Not a failure: deleting a file never
            # deletes data, and a failed partition would hold back every later load.
            landed = landing.manifest(source.name, ENTITY, name)
            context.log.warning(
                f"{source.name}: drop file {name!r} is no longer in {where}; "
                + ("its data landed earlier is kept" if landed else "nothing was landed from it")
            )
            return dg.MaterializeResult(
                metadata={
                    "file": name,
                    "status": "vanished",
                    "rows": 0,
                    "requests": requests,
                    "frozen": False,
                }
            )
        if manifest.status == "unreadable":
            context.log.warning(f"{source.name}: {name} rejected whole: {manifest.error}")
        else:
            context.log.info(
                f"{source.name}: landed {name}: {manifest.rows} rows, "
                f"{manifest.rejected} unparseable rows"
            )
        metadata: dict[str, object] = {
            "file": name,
            "size_bytes": drop.size,
            "modified_at": manifest.origin["modified_at"],
            "rows": manifest.rows,
            "rows_unparseable": manifest.rejected,
            "status": manifest.status,
            "frozen": False,
            "requests": requests,
        }
        if drop.item_id is not None:
            metadata["item_id"] = drop.item_id
        if manifest.error:
            metadata["error"] = manifest.error
        if manifest.origin.get("unknown_columns"):
            metadata["ignored_columns"] = manifest.origin["unknown_columns"]
        table = landing.read(manifest)
        if table is not None and table.num_rows:
            preview = table.select(list(PREVIEW_COLUMNS)).slice(0, 5).to_pylist()
            metadata["preview"] = markdown_table(
                PREVIEW_COLUMNS, [[r[c] for c in PREVIEW_COLUMNS] for r in preview]
            )
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(
        name=f"{source.name.replace('-', '_')}_land",
        selection=dg.AssetSelection.assets(land),
        description=f"Land one drop file of {source.name}",
    )

    @dg.sensor(
        name=f"{source.name.replace('-', '_')}_drop_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts one run per new or changed file in {source.location}",
    )
    def drop_sensor(context: SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if source.freeze:
            return dg.SkipReason(f"{source.name} is frozen (use last backup): folder not read")
        state = SensorCursor.parse(context.cursor)
        # Listing only, never a download (OneDrive: one delta request when nothing changed).
        with open_location(config, source) as location:
            files = location.list()
        changed = [f for f in files if state.files.get(f.name) != f.fingerprint]
        cursor = state.advance(files)
        if not changed:
            return dg.SensorResult(skip_reason="no new or changed files", cursor=cursor.dump())
        return dg.SensorResult(
            run_requests=[_run_request(f, cursor.returns.get(f.name, 0)) for f in changed],
            dynamic_partitions_requests=[partitions.build_add_request([f.name for f in changed])],
            cursor=cursor.dump(),
        )

    return land, job, drop_sensor


class SensorCursor(BaseModel):
    """What the drop sensor remembers between ticks.

    ``files`` is the fingerprint (name, size, mtime or etag) of every file in the last listing.
    ``returns`` counts how often a name disappeared from the listing: a file deleted before its
    run landed anything, then put back unchanged, needs a run key Dagster has not spent yet.
    """

    v: int = 2
    files: dict[str, str] = {}
    returns: dict[str, int] = {}

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor":
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("v") != 2:  # first format: a flat {name: fingerprint} map
            return cls(files=data)
        return cls.model_validate(data)

    def advance(self, files: list[DropFile]) -> "SensorCursor":
        listed = {f.name: f.fingerprint for f in files}
        returns = dict(self.returns)
        for gone in self.files.keys() - listed.keys():
            # Deleted files are forgotten (their data stays loaded) but their count is kept.
            returns[gone] = returns.get(gone, 0) + 1
        return SensorCursor(files=listed, returns=returns)

    def dump(self) -> str:
        return self.model_dump_json()


def _run_request(drop: DropFile, returns: int) -> dg.RunRequest:
    # The run key includes size and mtime: an unchanged file never starts a second run,
    # a changed one (same name) does, and so does one put back after it was deleted
    # (re-landing the same content replaces its partition: nothing doubles).
    run_key = drop.fingerprint if not returns else f"{drop.fingerprint}~{returns}"
    return dg.RunRequest(partition_key=drop.name, run_key=run_key)

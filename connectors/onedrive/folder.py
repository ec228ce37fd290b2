"""A OneDrive (for Business) folder as a drop location, listed with the Graph delta query.

Listing state, kept in the landing folder (`_location_state.json`, written atomically):
the delta link of the last complete listing and the folder's files by item id (name, size,
cTag, last modified). Each `list()` asks only for what changed since that link, applies it
by item id (delta answers carry no paths; a file moved out of the folder, deleted, or turned
into something else is dropped) and stores the new link. The state changes only when a
listing completes: a failure mid-way leaves the previous link, so nothing is skipped.

`410 Gone` (the link expired, or the service wants a resync) starts over with a full
enumeration. That loads nothing twice: a file's fingerprint is its name, size, item id and
cTag, none of which a re-enumeration changes, so the sensor and the runner see the same
fingerprints they already landed.

Why the landing folder and not `ops.sync_state`: the listing runs in the sensor and in the
landing asset, and neither may open DuckDB (a single-writer pool serialises DuckDB writes;
extraction never touches the warehouse). The state describes the source, like the landed
files next to it, so it lives with them.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from aiq_sync.config import GRAPH_BASE_URL, LOGIN_BASE_URL, FileDropSource
from aiq_sync.http import ApiError, RetryPolicy
from connectors.file_drop.location import DropVanished
from connectors.file_drop.reader import DropFile
from connectors.onedrive.auth import AppToken, OneDriveError
from connectors.onedrive.graph import GraphClient, ItemGone

logger = logging.getLogger("aiq_sync.onedrive")


class ItemState(BaseModel):
    name: str
    size: int
    ctag: str | None = None
    modified: datetime


class DeltaState(BaseModel):
    drive_id: str
    folder_id: str
    # The link that returns what changed since this listing (a Graph URL; not a credential).
    delta_link: str
    # item id -> file directly in the folder
    files: dict[str, ItemState] = Field(default_factory=dict)
    synced_at: datetime
    full_enumerations: int = 0
    last_full_reason: str | None = None


def _mtime_ns(moment: datetime) -> int:
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp()) * 10**9 + (
        moment.microsecond * 1000
    )


def _parse_time(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


class OneDriveFolder:
    def __init__(
        self,
        graph: GraphClient,
        *,
        drive_id: str,
        folder: str,
        pattern: str,
        state_path: Path,
    ) -> None:
        self.graph = graph
        self.drive_id = drive_id
        self.folder = folder.strip("/")
        self.pattern = pattern
        self.state_path = state_path
        self.description = f"onedrive://{drive_id}/{self.folder}"
        # What the last list() did, for logs and metadata: mode, reason, changes applied.
        self.last_listing: dict[str, Any] = {}

    # -- DropLocation ----------------------------------------------------------------------

    def list(self) -> list[DropFile]:
        folder_id = self._folder_id()
        state = self.load_state()
        reason: str | None = None
        if state is None:
            reason = "first listing"
        elif state.drive_id != self.drive_id or state.folder_id != folder_id:
            reason = "the folder was replaced or the location changed"
        files: dict[str, ItemState] = {}
        link = ""
        changes = 0
        if state is not None and reason is None:
            try:
                files, link, changes = self._delta(state.delta_link, dict(state.files), folder_id)
            except ApiError as exc:
                if exc.status != 410:
                    raise self._error(exc) from None
                reason = "delta link no longer valid (410 Gone)"
                logger.warning("%s: %s; enumerating the folder again", self.description, reason)
        full = 0 if state is None else state.full_enumerations
        attempts = 0
        while reason is not None and not link:
            attempts += 1
            try:
                files, link, changes = self._delta(self._root_delta(), {}, folder_id)
            except ApiError as exc:
                # A reset can also hit a full enumeration while it pages: start it again.
                if exc.status != 410 or attempts >= 3:
                    raise self._error(exc) from None
            full += 1
        self._save(
            DeltaState(
                drive_id=self.drive_id,
                folder_id=folder_id,
                delta_link=link,
                files=files,
                synced_at=datetime.now(UTC),
                full_enumerations=full,
                last_full_reason=reason if reason else (state.last_full_reason if state else None),
            )
        )
        self.last_listing = {
            "mode": "full" if reason else "delta",
            "reason": reason,
            "changes": changes,
            "files": len(files),
        }
        drops = [
            self._drop(item_id, item) for item_id, item in files.items() if self._wanted(item.name)
        ]
        return sorted(drops, key=lambda d: d.name)

    def find(self, name: str) -> DropFile | None:
        if not self._wanted(name) or "/" in name:
            return None
        path = f"{self.folder}/{name}" if self.folder else name
        try:
            item = self.graph.get(f"drives/{quote(self.drive_id, safe='')}/root:/{quote(path)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise self._error(exc) from None
        if "file" not in item or not item.get("id"):
            return None
        return self._drop(item["id"], self._item_state(item))

    def fetch(self, drop: DropFile, into: Path) -> Path:
        if drop.item_id is None:
            raise ValueError(f"{drop.name} is not a OneDrive item")
        dest = into / drop.name
        try:
            self.graph.download(self.drive_id, drop.item_id, dest)
        except ItemGone:
            raise DropVanished(f"{drop.name} is no longer in {self.description}") from None
        return dest

    def request_stats(self) -> dict[str, Any]:
        return self.graph.request_stats()

    def close(self) -> None:
        self.graph.close()
        self.graph.token.close()

    def check(self) -> None:
        """Sign in and find the folder (for `aiq-sync check`); raises OneDriveError."""
        self._folder_id()

    # -- state -----------------------------------------------------------------------------

    def load_state(self) -> DeltaState | None:
        if not self.state_path.is_file():
            return None
        try:
            return DeltaState.model_validate_json(self.state_path.read_text(encoding="utf-8"))
        except ValueError:
            logger.warning("%s: unreadable listing state; starting over", self.description)
            return None

    def _save(self, state: DeltaState) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        # A unique temp name: the sensor and a run may list at the same time; each writes a
        # consistent (link, files) pair and the last rename wins.
        tmp = self.state_path.with_name(f".{self.state_path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(state.model_dump_json(indent=1), encoding="utf-8")
        os.replace(tmp, self.state_path)

    # -- Graph -----------------------------------------------------------------------------

    def _root_delta(self) -> str:
        return f"drives/{quote(self.drive_id, safe='')}/root/delta"

    def _folder_id(self) -> str:
        drive = quote(self.drive_id, safe="")
        path = (
            f"drives/{drive}/root:/{quote(self.folder)}" if self.folder else f"drives/{drive}/root"
        )
        try:
            item = self.graph.get(path)
        except ApiError as exc:
            if exc.status == 404:
                raise OneDriveError(
                    f"{self.description}: folder {self.folder or '/'!r} not found in drive "
                    f"{self.drive_id} (check the drive id and the folder path)"
                ) from None
            raise self._error(exc) from None
        if "folder" not in item and "root" not in item:
            raise OneDriveError(f"{self.description}: {self.folder!r} is a file, not a folder")
        return str(item["id"])

    def _delta(
        self, first: str, files: dict[str, ItemState], folder_id: str
    ) -> tuple[dict[str, ItemState], str, int]:
        """Follow a delta listing to its deltaLink, applying each item to `files` by id."""
        changes = 0
        for page in self.graph.pages(first):
            for item in page.get("value", []):
                changes += 1
                item_id = item.get("id")
                if not item_id:
                    continue
                parent = (item.get("parentReference") or {}).get("id")
                if "deleted" in item or "file" not in item or parent != folder_id:
                    files.pop(item_id, None)  # deleted, moved away, or not a file
                else:
                    files[item_id] = self._item_state(item)
            link = page.get("@odata.deltaLink")
            if link:
                return files, link, changes
        raise OneDriveError(f"{self.description}: delta listing ended without a deltaLink")

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _item_state(item: dict[str, Any]) -> ItemState:
        return ItemState(
            name=str(item.get("name", "")),
            size=int(item.get("size") or 0),
            ctag=item.get("cTag") or item.get("eTag"),
            modified=_parse_time(item.get("lastModifiedDateTime")),
        )

    def _drop(self, item_id: str, item: ItemState) -> DropFile:
        return DropFile(
            name=item.name,
            path=None,
            size=item.size,
            mtime_ns=_mtime_ns(item.modified),
            item_id=item_id,
            ctag=item.ctag,
        )

    def _wanted(self, name: str) -> bool:
        return bool(name) and not name.startswith(".") and fnmatch.fnmatch(name, self.pattern)

    def _error(self, exc: ApiError) -> OneDriveError:
        text = str(exc)
        for secret in self.graph.token.secrets:
            text = text.replace(secret, "***")
        if exc.status == 403:
            text = (
                f"the app may not read drive {self.drive_id} (403 Forbidden): grant it the "
                "Files.Read.All application permission with admin consent"
            )
        elif exc.status == 401:
            text = "Graph rejected the app's token (401) even after signing in again"
        return OneDriveError(f"{self.description}: {text}")


def open_onedrive_folder(
    source: FileDropSource,
    state_path: Path,
    environ: Any,
    *,
    retry: RetryPolicy | None = None,
) -> OneDriveFolder:
    """Build the folder for a configured source, reading its three secrets from `environ`."""
    values: dict[str, str] = {}
    for field in ("tenant_id_env", "client_id_env", "client_secret_env"):
        var = getattr(source, field)
        value = environ.get(var) if var else None
        if not value:
            raise OneDriveError(
                f"sources[{source.name}].{field}: environment variable {var} is not set"
            )
        values[field] = value
    token = AppToken(
        login_base_url=source.login_base_url or LOGIN_BASE_URL,
        tenant_id=values["tenant_id_env"],
        client_id=values["client_id_env"],
        client_secret=values["client_secret_env"],
        retry=retry,
        labels={f: str(getattr(source, f)) for f in ("client_id_env", "client_secret_env")},
    )
    graph = GraphClient(source.graph_base_url or GRAPH_BASE_URL, token, retry=retry)
    return OneDriveFolder(
        graph,
        drive_id=source.onedrive_drive_id,
        folder=source.onedrive_folder,
        pattern=source.pattern,
        state_path=state_path,
    )

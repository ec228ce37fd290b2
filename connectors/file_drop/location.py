"""Where drop files come from: a local folder or a OneDrive folder, behind one small protocol.

The sensor only ever calls `list()` (no download); the landing asset calls `find(name)` for
the partition it lands and `fetch()` to get a local copy it can stream through the parser.
Everything after `fetch()` (parsing, landing, loading) is the same for every location.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from aiq_sync.config import AppConfig, FileDropSource
from aiq_sync.landing import Landing, Manifest
from connectors.file_drop.extract import land_drop_file
from connectors.file_drop.reader import DropFile, discover

# Downloads wait here (same filesystem as the landing, never /tmp, which may be RAM-backed).
SCRATCH = ".downloads"


class DropVanished(Exception):
    """The file was listed but is gone (deleted or renamed) by the time it is read."""


class DropLocation(Protocol):
    """A folder of drop files. Implementations never delete anything at the source."""

    # Where, for messages and metadata (never a secret).
    description: str

    def list(self) -> list[DropFile]:
        """Every drop file there now (matching the source's pattern), sorted by name."""
        ...

    def find(self, name: str) -> DropFile | None:
        """The file called `name` as it is now, or None if there is none."""
        ...

    def fetch(self, drop: DropFile, into: Path) -> Path:
        """A local path holding `drop`'s bytes (a download into `into` for remote files).
        Raises DropVanished if the file is gone."""
        ...

    def request_stats(self) -> dict[str, Any]:
        """Requests made so far (remote locations), for metadata; never secrets."""
        ...

    def close(self) -> None: ...


class LocalFolder:
    def __init__(self, folder: Path, pattern: str = "*.csv"):
        self.folder = folder
        self.pattern = pattern
        self.description = str(folder)

    def list(self) -> list[DropFile]:
        return discover(self.folder, self.pattern)

    def find(self, name: str) -> DropFile | None:
        path = self.folder / name
        if (
            name.startswith(".")
            or not fnmatch.fnmatch(name, self.pattern)
            or path.parent != self.folder
            or not path.is_file()
        ):
            return None
        stat = path.stat()
        return DropFile(name, path, stat.st_size, stat.st_mtime_ns)

    def fetch(self, drop: DropFile, into: Path) -> Path:
        # Read in place: nothing to copy.
        if drop.path is None or not drop.path.is_file():
            raise DropVanished(f"{drop.name} is no longer in {self.folder}")
        return drop.path

    def request_stats(self) -> dict[str, Any]:
        return {"requests": 0}

    def close(self) -> None:
        return None


def state_path(landing: Landing, source: str) -> Path:
    """Where a remote location keeps its listing state (e.g. the OneDrive delta link)."""
    return landing.root / source / "_location_state.json"


@contextmanager
def open_location(
    config: AppConfig, source: FileDropSource, environ: dict[str, str] | None = None
) -> Iterator[DropLocation]:
    """The source's drop location; secrets are read from the environment only here."""
    if source.is_onedrive:
        from connectors.onedrive import open_onedrive_folder  # only OneDrive sources need it

        env = os.environ if environ is None else environ
        landing = Landing(config.landing_path)
        location: DropLocation = open_onedrive_folder(source, state_path(landing, source.name), env)
    else:
        location = LocalFolder(config.resolve(source.location), source.pattern)
    try:
        yield location
    finally:
        location.close()


def check_location(
    config: AppConfig, source: FileDropSource, environ: dict[str, str] | None = None
) -> list[str]:
    """Problems with a drop location, one line each (for `aiq-sync check`): a missing local
    folder; for OneDrive, a failed sign-in or a folder not found (a frozen source is not
    contacted)."""
    if not source.is_onedrive:
        folder = config.resolve(source.location)
        if not folder.is_dir():
            return [f"sources[{source.name}].location: folder {folder} does not exist"]
        return []
    if source.freeze:
        return []
    from connectors.onedrive import OneDriveError, OneDriveFolder

    try:
        with open_location(config, source, environ) as location:
            assert isinstance(location, OneDriveFolder)
            location.check()
    except OneDriveError as exc:
        text = str(exc)
        return [text if text.startswith("sources[") else f"sources[{source.name}].location: {text}"]
    return []


def land_from_location(
    landing: Landing, source: str, location: DropLocation, drop: DropFile
) -> Manifest:
    """Fetch `drop` (a streamed download for remote files), land it, drop the local copy."""
    scratch = landing.root / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{source}-", dir=scratch))
    try:
        local = location.fetch(drop, folder)
        return land_drop_file(landing, source, replace(drop, path=local))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

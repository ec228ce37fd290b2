"""OneDrive for Business drop folders through Microsoft Graph (app-only, client credentials).

`open_onedrive_folder(source, state_path, environ)` gives a `DropLocation` (see
connectors/file_drop/location.py): listing by delta query, streamed downloads. Parsing,
landing and loading are the flat-file connector's.
"""

from connectors.onedrive.auth import AppToken, OneDriveError
from connectors.onedrive.folder import DeltaState, OneDriveFolder, open_onedrive_folder
from connectors.onedrive.graph import GraphClient

__all__ = [
    "AppToken",
    "DeltaState",
    "GraphClient",
    "OneDriveError",
    "OneDriveFolder",
    "open_onedrive_folder",
]

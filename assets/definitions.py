"""The code location loaded by workspace.yaml / `dagster dev -m assets.definitions`.

The config file comes from AIQ_SYNC_CONFIG (default ./aiq_sync.yaml); the asset graph is
built from it, one group per source.
"""

from aiq_sync.config import load_config
from assets.factory import build_definitions

defs = build_definitions(load_config())

"""`make demo` / `make ui`: the whole sync on the embedded default, nothing to set up.

Generates the sample drop files if they are missing, starts a local sandbox for every API
source of the demo config (real HTTP on loopback, deterministic data), exports the sandbox
tokens (they are not secrets), then either runs `aiq-sync check` + `aiq-sync run` and two
analyst queries (`make demo`) or serves the Dagster UI on the same config (`make ui`).
Sandboxes stop when it ends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiq_sync.config import AppConfig, load_config

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "aiq_sync.yaml"
# The sandboxes' "now": fixed, so two demo runs see identical upstream data.
DEMO_NOW = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
# Sandbox credentials, exported for the run when the environment does not set them.
DEMO_SECRETS = {
    "DEMO_BC_TOKEN": "demo-bigcommerce-token",
    "DEMO_WJ_KEY": "demo-webjoint-key",
    "DEMO_OD_TENANT": "demo-tenant",
    "DEMO_OD_CLIENT": "demo-client",
    "DEMO_OD_SECRET": "demo-onedrive-secret",
}
# The OneDrive demo folder: a second chain's daily exports, different shoppers (own seed).
ONEDRIVE_DROPS = {"days": 30, "customers": 500, "lines_target": 3000, "seed": 11}

QUERIES = {
    "Revenue by store": """
        SELECT coalesce(store_name, CASE WHEN location_key IS NULL
                 THEN '(online: ' || source || ')'
                 ELSE '(unmapped: ' || source || ' ' || location_key || ')' END) AS store,
               count(*) AS sales, sum(total) AS revenue, count(DISTINCT contact_id) AS shoppers
        FROM analytics.sales WHERE NOT is_refund
        GROUP BY ALL ORDER BY revenue DESC""",
    "Loyalty members by favourite store": """
        SELECT coalesce(favorite_store_name, '(none)') AS favorite_store,
               count(*) AS members, sum(points_balance) AS points,
               count(*) FILTER (WHERE contact_id IN (
                   SELECT contact_id FROM analytics.opt_in_queue WHERE status = 'pending'))
                 AS sms_opt_ins_pending
        FROM analytics.loyalty_members GROUP BY ALL ORDER BY members DESC""",
}


def _sandbox_for(source: Any) -> Any | None:
    """A started-on-demand sandbox serving `source`, if it points at loopback."""
    if source.source_type == "bigcommerce":
        url = urlparse(source.store_root)
        if url.hostname != "127.0.0.1":
            return None
        from aiq_sync.sandbox.bigcommerce import BigCommerceSandbox

        return BigCommerceSandbox(
            store_hash=source.store_hash,
            orders=6000,
            customers=1500,
            products=150,
            locations=3,
            seed=7,
            token=os.environ[source.access_token_env],
            now=DEMO_NOW,
            timezone=source.timezone or "America/Chicago",
            port=url.port or 0,
        )
    if source.source_type == "webjoint":
        url = urlparse(source.base_url)
        if url.hostname != "127.0.0.1":
            return None
        from aiq_sync.sandbox.webjoint import WebjointSandbox

        return WebjointSandbox(
            company_id=source.company_id,
            facilities=3,
            orders=4000,
            customers=1200,
            products=120,
            history_days=90,
            seed=7,
            api_key=os.environ[source.api_key_env],
            now=DEMO_NOW,
            timezone=source.timezone or "America/Los_Angeles",
            port=url.port or 0,
        )
    if source.source_type == "file_drop" and source.is_onedrive:
        url = urlparse(source.graph_base_url or "")
        if url.hostname != "127.0.0.1":
            return None
        return _onedrive_sandbox(source, url.port or 0)
    return None


def _onedrive_sandbox(source: Any, port: int) -> Any:
    """A Graph sandbox whose drive holds generated daily drops, with fixed modification times
    so a second demo run sees the same files (and lands nothing again)."""
    import tempfile

    from aiq_sync.sandbox.graph import GraphSandbox
    from examples.generate_drops import DropSpec, generate

    drive_id, _, folder = source.location.removeprefix("onedrive://").partition("/")
    sandbox = GraphSandbox(
        tenant_id=os.environ[source.tenant_id_env],
        client_id=os.environ[source.client_id_env],
        client_secret=os.environ[source.client_secret_env],
        drive_id=drive_id,
        folder=folder,
        seed=7,
        port=port,
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = generate(Path(tmp), DropSpec(**ONEDRIVE_DROPS))
        for name in report.files:
            day = datetime.strptime(name, "sales_%Y-%m-%d.csv").replace(hour=23, tzinfo=UTC)
            sandbox.put_file(name, (Path(tmp) / name).read_bytes(), modified=day)
    return sandbox


@contextmanager
def sandboxes(config: AppConfig) -> Iterator[list[Any]]:
    with ExitStack() as stack:
        started = []
        for source in config.sources:
            sandbox = _sandbox_for(source)
            if sandbox is not None:
                stack.enter_context(sandbox)
                print(f"sandbox for {source.name} ({source.source_type}) on loopback")
                started.append(sandbox)
        yield started


def ensure_drops(config: AppConfig) -> None:
    """Generate the sample files into every local drop folder that has none yet."""
    from examples.generate_drops import main as generate

    for source in config.sources:
        location = getattr(source, "location", None)
        if source.source_type != "file_drop" or location is None or "://" in location:
            continue
        folder = config.resolve(location)
        if not any(folder.glob("*.csv")):
            generate(["--out", str(folder)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    parser.add_argument("--ui", action="store_true", help="serve the Dagster UI instead")
    args = parser.parse_args(argv)
    os.environ.setdefault("AIQ_SYNC_CONFIG", str(DEMO_CONFIG))
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    config = load_config(os.environ["AIQ_SYNC_CONFIG"])
    ensure_drops(config)
    from aiq_sync.cli import main as cli

    with sandboxes(config):
        if args.ui:
            dagster = Path(sys.executable).parent / "dagster"
            try:
                return subprocess.call([str(dagster), "dev", "-w", "workspace.yaml"])
            except KeyboardInterrupt:
                return 0
        code = cli(["check"]) or cli(["run"])
        if code:
            return code
        for title, query in QUERIES.items():
            print(f"{title}:")
            cli(["sql", " ".join(query.split())])
    return 0


if __name__ == "__main__":
    sys.exit(main())

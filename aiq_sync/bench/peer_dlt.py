"""The dlt peer of the benchmark (issue #6): the same BigCommerce store loaded the way a
competent dlt user would, with dlt's declarative `rest_api` source, merge by primary key, into
DuckDB.

- orders: `GET /v2/orders?include=consignments.line_items&consignment_structure=object`,
  page/limit=250, a 204 past the last page ends paging (a `response_actions` ignore rule: the
  body is empty, not JSON). Line items come embedded, as BigCommerce documents; dlt's
  normaliser unnests them into child tables (`orders__consignments__<kind>__line_items`).
  The alternative, a child resource resolving `/v2/orders/{id}/products` per order, costs one
  request per order: 200k requests, about 11 hours at the live quota of 150 per 30 s.
- customers: `GET /v3/customers?include=addresses`, page numbers, `meta.pagination.total_pages`.

Files load as Parquet (`loader_file_format="parquet"`, dlt's recommended format for DuckDB at
volume). dlt's default for DuckDB, `insert_values` (SQL INSERT text), measured with dlt 1.31 and
DuckDB 2.0 at 3,000 orders: 40.7 s and 3.0 GB peak RSS, against 6.5 s and 0.4 GB with Parquet;
most of it in the load step (DuckDB parsing the INSERT statements). `run_peer(...,
loader_file_format=None)` measures the default.

dlt runs in its own Python process, so its peak RSS (`ru_maxrss` from os.wait4) is its own.
dlt 1.31 installs next to our pins (duckdb 2.0, pandas 3, pyarrow 26) without changing them:
`pip install -e '.[peer]'` (`make bench-peer-env`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from aiq_sync.bench.measure import measure

TOKEN_ENV = "AIQ_BENCH_PEER_TOKEN"  # how the child gets the token: never on its command line
PAGE = 250


def rest_api_config(base_url: str, token: str) -> dict[str, Any]:
    """The dlt `rest_api` source configuration (a plain dict, as dlt's docs write it)."""
    page_number = {"type": "page_number", "base_page": 1, "page_param": "page"}
    return {
        "client": {
            "base_url": base_url,
            "headers": {"X-Auth-Token": token, "Accept": "application/json"},
        },
        "resource_defaults": {
            "write_disposition": "merge",
            "primary_key": "id",
            "endpoint": {"params": {"limit": PAGE}},
        },
        "resources": [
            {
                "name": "orders",
                "endpoint": {
                    "path": "v2/orders",
                    "params": {
                        "include": "consignments.line_items",
                        "consignment_structure": "object",
                    },
                    "data_selector": "$",
                    # v2 answers a bare array and 204 (no body) past the last page.
                    "paginator": {**page_number, "total_path": None},
                    "response_actions": [{"status_code": 204, "action": "ignore"}],
                },
            },
            {
                "name": "customers",
                "endpoint": {
                    "path": "v3/customers",
                    "params": {"include": "addresses"},
                    "data_selector": "data",
                    "paginator": {**page_number, "total_path": "meta.pagination.total_pages"},
                },
            },
        ],
    }


def _child(base_url: str, workdir: Path, out: Path, loader_file_format: str | None) -> None:
    """Runs in the child process: the pipeline, then row counts read back from DuckDB."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    token = os.environ[TOKEN_ENV]
    started = time.monotonic()
    pipeline = dlt.pipeline(
        pipeline_name="bc_peer",
        pipelines_dir=str(workdir / "pipelines"),
        destination=dlt.destinations.duckdb(str(workdir / "peer.duckdb")),
        dataset_name="bigcommerce",
    )
    pipeline.run(
        rest_api_source(rest_api_config(base_url, token)), loader_file_format=loader_file_format
    )
    wall = time.monotonic() - started
    with pipeline.sql_client() as client:
        tables = [r[0] for r in client.execute_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            pipeline.dataset_name,
        )]  # fmt: skip

        def count(table: str) -> int:
            return int(client.execute_sql(f'SELECT count(*) FROM "{table}"')[0][0])

        items = sum(count(t) for t in tables if re.fullmatch(r"orders__.*__line_items", t))
        rows = {"orders": count("orders"), "items": items, "customers": count("customers")}
    result = {"wall_s": round(wall, 2), "rows": rows, "dlt_version": dlt.__version__}
    out.write_text(json.dumps(result))


def _admin(base_url: str) -> httpx.Client:
    root = re.match(r"https?://[^/]+", base_url)
    if root is None:
        raise ValueError(f"not an http(s) URL: {base_url}")
    return httpx.Client(base_url=root.group(0) + "/_admin/", timeout=60)


def run_peer(
    bc_base_url: str,
    token: str,
    workdir: Path,
    *,
    requests_counter: Callable[[], int] | None = None,
    loader_file_format: str | None = "parquet",
) -> dict[str, Any]:
    """Load orders (with line items) and customers from the sandbox at `bc_base_url` (its API
    path, `.../stores/<hash>/`) with dlt in a child process. Requests are counted by
    `requests_counter` (e.g. `lambda: sandbox.counters()["requests_total"]`), else by the
    sandbox's `/_admin/counters`; row counts are checked against `/_admin/holdings`."""
    workdir.mkdir(parents=True, exist_ok=True)
    base_url = bc_base_url.rstrip("/") + "/"
    with _admin(base_url) as admin:
        if requests_counter is None:

            def requests_counter() -> int:
                return int(admin.get("counters").raise_for_status().json()["requests_total"])

        truth = admin.get("holdings").raise_for_status().json()
        before = requests_counter()
        out = workdir / "peer-result.json"
        out.unlink(missing_ok=True)
        env = {**os.environ, TOKEN_ENV: token, "RUNTIME__DLTHUB_TELEMETRY": "false"}
        cmd = [sys.executable, "-m", "aiq_sync.bench.peer_dlt", base_url, str(workdir), str(out)]
        cmd += ["--loader-file-format", loader_file_format or "default"]
        log = workdir / "peer-dlt.log"
        measured = measure(cmd, env, log)
        requests = requests_counter() - before
    if measured.exit_code != 0 or not out.exists():
        raise RuntimeError(f"the dlt peer failed (exit {measured.exit_code}); see {log.name}")
    child = json.loads(out.read_text())
    rows = child["rows"]
    expected = {k: int(truth[k]) for k in ("orders", "items", "customers")}
    return {
        "wall_s": measured.wall_s,  # process start to exit: imports and DuckDB included
        "pipeline_s": child["wall_s"],
        "requests": requests,
        "rows": rows,
        "rows_expected": expected,
        "rows_match": rows == expected,
        "peak_rss_mb": measured.peak_rss_mb,
        "dlt_version": child["dlt_version"],
        "loader_file_format": loader_file_format or "default",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="child process of run_peer (internal)")
    parser.add_argument("base_url")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--loader-file-format", default="parquet", help="or: default")
    args = parser.parse_args(argv)
    fmt = None if args.loader_file_format == "default" else args.loader_file_format
    _child(args.base_url, args.workdir, args.out, fmt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

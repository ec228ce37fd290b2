"""`aiq-sync bench` / `make bench`: the full and the nightly sync at scale, against the
raw-fetch floor and dlt, in one run.

Each contender runs in its own process (peak RSS is that process's, from ``wait4``); the two
sandboxes run in two more processes and count the requests (``/_admin/counters``). Order:
floor, aiq full (empty warehouse -> analytics views), then the sandboxes' clock moves a day
and 1 % of orders and customers change, aiq nightly (resumes from the landing watermark),
then the dlt peer and the quota run (aiq_sync.bench.peer_dlt / .quota, optional).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import yaml

from aiq_sync.bench.measure import Measured, measure
from aiq_sync.bench.sandboxes import (
    BC_TIMEZONE,
    BC_TOKEN,
    HISTORY_DAYS,
    WJ_COMPANY,
    WJ_KEY,
    WJ_TIMEZONE,
    SandboxProcess,
    Scale,
    start_sandboxes,
)

DAY = 86_400
NIGHTLY_SHARE = 0.01
BC_TOKEN_ENV = "AIQ_BENCH_BC_TOKEN"
WJ_KEY_ENV = "AIQ_BENCH_WJ_KEY"
ENTITIES = ("orders", "items", "customers")


def _requests(sandboxes: dict[str, SandboxProcess]) -> dict[str, int]:
    """Requests each sandbox served since its counters were reset."""
    return {name: s.admin.counters()["requests_total"] for name, s in sandboxes.items()}


def _reset(sandboxes: dict[str, SandboxProcess]) -> None:
    for sandbox in sandboxes.values():
        sandbox.admin.reset_counters()


# ------------------------------------------------------------------------------ config


def write_config(workdir: Path, sandboxes: dict[str, SandboxProcess], start: str) -> Path:
    """A config with one store per BigCommerce location and Webjoint facility, both sources
    from `start` (the sandboxes' first day of history)."""
    bc_url = sandboxes["bc"].url.rstrip("/") + "/v3/"
    stores = [
        {"id": f"store{i}", "name": f"Bench Store {i}", "keys": {"bc": str(i), "wj": str(50 + i)}}
        for i in range(1, 6)
    ]
    config = {
        "warehouse": "warehouse/aiq.duckdb",
        "landing": "landing",
        "stores": stores,
        "loyalty": {"points_per_currency_unit": 1, "minimum_age": 21},
        "sources": [
            {
                "name": "bc",
                "type": "bigcommerce",
                "api_path": bc_url,
                "access_token_env": BC_TOKEN_ENV,
                "timezone": BC_TIMEZONE,
                "start_date": start,
                "age_gate_confirmed": True,
            },
            {
                "name": "wj",
                "type": "webjoint",
                "api_key_env": WJ_KEY_ENV,
                "company_id": WJ_COMPANY,
                "base_url": sandboxes["wj"].url,
                "timezone": WJ_TIMEZONE,
                "start_date": start,
                "age_gate_confirmed": True,
            },
        ],
    }
    path = workdir / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "AIQ_SYNC_CONFIG")}
    env["PYTHONUNBUFFERED"] = "1"  # progress lines reach the log as printed (RSS attribution)
    env[BC_TOKEN_ENV] = BC_TOKEN
    env[WJ_KEY_ENV] = WJ_KEY
    return env


# ------------------------------------------------------------------------------ rows


def warehouse_rows(path: Path) -> dict[str, dict[str, int]]:
    """Per source: sales, sale items and customer personas in the warehouse."""
    queries = {
        # A refund is a second sale row (`<order id>:refund`) of the same order.
        "orders": "SELECT source, count(*) FROM core.sales "
        "WHERE src_sale_id NOT LIKE '%:refund' GROUP BY ALL",
        "items": "SELECT source, count(*) FROM core.sale_items GROUP BY ALL",
        "customers": "SELECT source, count(*) FROM core.personas "
        "WHERE persona_key NOT LIKE '%:guest:%' GROUP BY ALL",
    }
    out: dict[str, dict[str, int]] = {}
    with duckdb.connect(str(path), read_only=True) as con:
        for entity, sql in queries.items():
            for source, count in con.sql(sql).fetchall():
                out.setdefault(source, dict.fromkeys(ENTITIES, 0))[entity] = int(count)
    return out


def landed_since(landing_root: Path, since: datetime) -> dict[str, dict[str, int]]:
    """Per source: orders, their line items and customers landed at or after `since`."""
    from aiq_sync.bench.floor import _count_bc_items
    from aiq_sync.landing import Landing

    landing = Landing(landing_root)
    out: dict[str, dict[str, int]] = {}
    for source in ("bc", "wj"):
        counts = out.setdefault(source, dict.fromkeys(ENTITIES, 0))
        for entity in ("orders", "customers"):
            for manifest in landing.manifests(source, entity):
                if manifest.extracted_at < since:
                    continue
                counts[entity] += manifest.rows
                table = landing.read(manifest) if entity == "orders" else None
                if table is None:
                    continue
                for text in table.column("payload").to_pylist():
                    order = json.loads(text)
                    counts["items"] += (
                        _count_bc_items(order)
                        if source == "bc"
                        else len(order.get("details") or ())
                    )
    return out


def _total(per_source: dict[str, dict[str, int]]) -> dict[str, int]:
    return {e: sum(s.get(e, 0) for s in per_source.values()) for e in ENTITIES}


def _contender(
    name: str,
    measured: Measured,
    requests: dict[str, int],
    rows: dict[str, dict[str, int]],
    log: Path,
) -> dict[str, Any]:
    total = _total(rows)
    ok = measured.exit_code == 0
    return {
        "name": name,
        "status": "ok" if ok else f"failed (exit {measured.exit_code}, see {log})",
        "wall_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "requests": sum(requests.values()),
        "requests_by_source": requests,
        "rows": total,
        "rows_by_source": rows,
        "rows_per_s": round(sum(total.values()) / measured.wall_s) if measured.wall_s else None,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_rss_after": measured.peak_during,
    }


# ------------------------------------------------------------------------------ the run


def run_bench(
    scale: float,
    out: Path,
    *,
    skip_peer: bool = False,
    skip_quota: bool = False,
    webjoint_share: float = 0.02,
    keep: bool = False,
    profile_with: str = "",
    history_days: int = HISTORY_DAYS,
    say: Any = print,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sizes = Scale.of(scale, webjoint_share)
    # The full run is "last night": the sandboxes' clock a day behind, so the nightly run
    # (clock moved a day) still falls inside today for the runner, which uses the wall clock.
    real_now = datetime.now(UTC).replace(microsecond=0)
    night = real_now - timedelta(days=1)
    start = (night - timedelta(days=history_days)).date().isoformat()
    say(f"bench: scale {scale} ({sizes.bc_orders} BigCommerce + {sizes.wj_orders} Webjoint orders)")
    started = time.monotonic()
    sandboxes = start_sandboxes(sizes, night, workdir, history_days)
    say(f"bench: sandboxes up in {time.monotonic() - started:.1f}s")
    results: dict[str, Any] = {
        "scale": scale,
        "sizes": sizes.model_dump(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "history_days": history_days,
        "started_at": real_now.isoformat(),
        "contenders": {},
    }
    contenders = results["contenders"]
    try:
        holdings = {name: s.admin.holdings() for name, s in sandboxes.items()}
        results["holdings"] = holdings
        config = write_config(workdir, sandboxes, start)
        env = child_env()
        py = sys.executable

        # floor
        _reset(sandboxes)
        floor_out = workdir / "floor.json"
        log = workdir / "floor.log"
        say("bench: floor ...")
        cmd = [py, "-m", "aiq_sync.bench.floor", "--config", str(config), "--out", str(floor_out)]
        measured = measure(cmd, env, log)
        requests = _requests(sandboxes)
        rows = {}
        if floor_out.exists():
            floor = json.loads(floor_out.read_text())
            rows = {
                name: {e: s[e] for e in ENTITIES} for name, s in floor.get("sources", {}).items()
            }
        contenders["floor"] = _contender("floor", measured, requests, rows, log)

        # aiq full, then nightly
        aiq = [py, "-m", "aiq_sync.cli", "--config", str(config), "run"]
        _reset(sandboxes)
        log = workdir / "aiq_full.log"
        say("bench: aiq-sync full ...")
        # A profiling run wraps the full run (e.g. "py-spy record -o full.svg --"): its
        # numbers then measure the profiler too.
        measured = measure([*shlex.split(profile_with), *aiq], env, log)
        requests = _requests(sandboxes)
        warehouse = workdir / "warehouse" / "aiq.duckdb"
        rows = warehouse_rows(warehouse) if warehouse.exists() else {}
        contenders["aiq_full"] = _contender("aiq-sync full", measured, requests, rows, log)

        modified = {}
        for name, sandbox in sandboxes.items():
            sandbox.admin.advance(DAY)
            modified[name] = sandbox.admin.modify(NIGHTLY_SHARE)
        results["nightly_modified"] = modified
        _reset(sandboxes)
        log = workdir / "aiq_nightly.log"
        say("bench: aiq-sync nightly ...")
        nightly_start = datetime.now(UTC)
        measured = measure(aiq, env, log)
        requests = _requests(sandboxes)
        rows = landed_since(workdir / "landing", nightly_start)
        contenders["aiq_nightly"] = _contender("aiq-sync nightly", measured, requests, rows, log)

        # peer
        if skip_peer:
            contenders["dlt"] = {"name": "dlt", "status": "not run: --skip-peer"}
        else:
            say("bench: dlt peer ...")
            contenders["dlt"] = _peer(sandboxes, workdir)
    finally:
        for sandbox in sandboxes.values():
            sandbox.stop()

    if skip_quota:
        results["quota"] = {"status": "not run: --skip-quota"}
    else:
        say("bench: quota run ...")
        results["quota"] = _quota(sizes.bc_orders, workdir)

    _ratios(results)
    results["wall_s"] = round(time.monotonic() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render_markdown(results)
    (out / "results.md").write_text(table)
    say(table)
    if not keep:
        shutil.rmtree(workdir / "landing", ignore_errors=True)
        shutil.rmtree(workdir / "warehouse", ignore_errors=True)
    return results


def _peer(sandboxes: dict[str, SandboxProcess], workdir: Path) -> dict[str, Any]:
    try:
        from aiq_sync.bench.peer_dlt import run_peer

        _reset(sandboxes)
        peer = dict(run_peer(sandboxes["bc"].url, BC_TOKEN, workdir / "dlt"))
        requests = sum(_requests(sandboxes).values())
    except Exception as exc:  # a missing module or a failed peer must not sink the bench
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"name": "dlt", "status": f"not run: {type(exc).__name__}: {first}"}
    rows = peer.get("rows") or {}
    wall = float(peer.get("wall_s") or 0)
    return {
        "name": "dlt",
        "status": "ok",
        "wall_s": round(wall, 2),
        "requests": int(peer.get("requests") or requests),
        "requests_seen_by_sandbox": requests,
        "rows": {e: int(rows.get(e, 0)) for e in ENTITIES},
        "rows_per_s": round(sum(int(rows.get(e, 0)) for e in ENTITIES) / wall) if wall else None,
        "peak_rss_mb": peer.get("peak_rss_mb"),
    }


def _quota(orders: int, workdir: Path) -> dict[str, Any]:
    try:
        from aiq_sync.bench.quota import run_quota

        return {"status": "ok", **run_quota(orders, workdir / "quota")}
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"status": f"not run: {type(exc).__name__}: {first}"}


def _ratios(results: dict[str, Any]) -> None:
    contenders = results["contenders"]
    floor = contenders.get("floor", {}).get("wall_s")
    full = contenders.get("aiq_full", {})
    for c in contenders.values():
        if floor and c.get("wall_s"):
            c["ratio_to_floor"] = round(c["wall_s"] / floor, 2)
    targets: dict[str, Any] = {}
    if full.get("wall_s") and floor:
        targets["full_vs_floor"] = {"value": full["ratio_to_floor"], "target": "<= 2"}
    nightly = contenders.get("aiq_nightly", {})
    if full.get("wall_s") and nightly.get("wall_s"):
        share = round(nightly["wall_s"] / full["wall_s"], 3)
        targets["nightly_vs_full"] = {"value": share, "target": "<= 0.10"}
    dlt = contenders.get("dlt", {})
    if full.get("wall_s") and dlt.get("wall_s"):
        speedup = round(dlt["wall_s"] / full["wall_s"], 2)
        targets["dlt_vs_full"] = {
            "value": speedup,
            "target": ">= 3 (aiq also lands Webjoint and builds every view; dlt loads "
            "BigCommerce orders, items, customers only)",
        }
    if full.get("peak_rss_mb"):
        targets["full_peak_rss_mb"] = {"value": full["peak_rss_mb"], "target": "< 600 at 1M"}
    if full.get("requests") and full.get("rows", {}).get("orders"):
        per_k = round(full["requests"] / full["rows"]["orders"] * 1000, 2)
        targets["requests_per_1000_orders"] = {"value": per_k, "target": "<= 5"}
        bc_orders = full.get("rows_by_source", {}).get("bc", {}).get("orders")
        if bc_orders:
            per_k = round(full["requests_by_source"]["bc"] / bc_orders * 1000, 2)
            targets["requests_per_1000_orders_bigcommerce"] = {"value": per_k, "target": "<= 5"}
    results["targets"] = targets


def render_markdown(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    lines = [
        f"Benchmark at scale {results['scale']}: BigCommerce {sizes['bc_orders']:,} orders, "
        f"{sizes['bc_customers']:,} customers, {sizes['bc_products']:,} products, "
        f"{sizes['bc_locations']} locations; Webjoint {sizes['wj_orders']:,} orders in "
        f"{sizes['wj_facilities']} facilities, {sizes['wj_customers']:,} customers. "
        f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}.",
        "",
        "| contender | wall s | CPU s | requests | orders | items | customers | rows/s "
        "| peak RSS MB | x floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in results["contenders"].values():
        if c.get("status") != "ok" and "wall_s" not in c:
            lines.append(f"| {c['name']} | {c['status']} | | | | | | | | |")
            continue
        rows = c.get("rows") or {}
        name = c["name"] if c.get("status") == "ok" else f"{c['name']} ({c['status']})"
        cells = [
            name,
            _fmt(c.get("wall_s")),
            _fmt(c.get("cpu_s")),
            _fmt(c.get("requests")),
            *(_fmt(rows.get(e)) for e in ENTITIES),
            _fmt(c.get("rows_per_s")),
            _fmt(c.get("peak_rss_mb")),
            _fmt(c.get("ratio_to_floor")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    quota = results.get("quota") or {}
    if quota.get("status") == "ok":
        lines += [
            "",
            f"Quota run (time scale {quota.get('time_scale')}): "
            f"{quota.get('requests_per_1000_orders')} requests per 1,000 orders, "
            f"{_pct(quota.get('quota_share_used'))} of quota used, "
            f"{quota.get('http_429')} 429s, {quota.get('failed_requests')} failed requests; "
            f"a per-order line-item design would need {quota.get('per_order_design_requests')} "
            "requests.",
        ]
    elif quota:
        lines += ["", f"Quota run: {quota.get('status')}"]
    if results.get("targets"):
        lines += ["", "| target | value | goal |", "|---|---:|---|"]
        for name, t in results["targets"].items():
            lines.append(f"| {name} | {t['value']} | {t['target']} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: Any) -> str:
    return f"{value * 100:.0f}%" if isinstance(value, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiq-sync bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scale", type=float, default=1.0, help="1.0: 200k orders (default); 5.0: 1M"
    )
    parser.add_argument("--out", default="bench", help="folder for results.json / results.md")
    parser.add_argument("--skip-peer", action="store_true", help="do not run dlt")
    parser.add_argument("--skip-quota", action="store_true", help="do not run the quota run")
    parser.add_argument(
        "--webjoint-share",
        type=float,
        default=0.02,
        help="Webjoint orders and customers as a share of BigCommerce's (default 0.02)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the landing and warehouse")
    parser.add_argument(
        "--history-days",
        type=int,
        default=HISTORY_DAYS,
        help=f"days of order history (one landing partition each; default {HISTORY_DAYS})",
    )
    parser.add_argument(
        "--profile-with",
        default="",
        help='prefix for the full run, e.g. "py-spy record -o full.svg --" (skews its numbers)',
    )


def run_from_args(args: argparse.Namespace) -> int:
    if args.scale <= 0:
        print("--scale must be > 0", file=sys.stderr)
        return 2
    results = run_bench(
        args.scale,
        Path(args.out),
        skip_peer=args.skip_peer,
        skip_quota=args.skip_quota,
        webjoint_share=args.webjoint_share,
        keep=args.keep,
        profile_with=args.profile_with,
        history_days=args.history_days,
    )
    failed = [c["name"] for c in results["contenders"].values() if c["status"].startswith("fail")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

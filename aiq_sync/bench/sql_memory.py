"""Memory and time of a whole SQL-source sync (issue #8: 1M sale lines under 400 MB peak RSS).

    python -m aiq_sync.bench.sql_memory --lines 1000000 [--workdir DIR] [--json]
        [--memory-limit 128MB] [--threads N]

Builds a SQLite database of N sale lines deterministically (one year of sales, several
stores, returning customers with phones and e-mails, 1-4 lines per ticket), writes a config
with one `type: sql` source, runs `aiq-sync run` over the year in a child process and reports
the child's wall time and peak RSS (`os.wait4` ru_maxrss), the rows landed and the rows in
`core.sale_items`. The child runs alone in its process so the numbers are the sync's, not the
generator's. Timings on a shared machine are noisy: repeat a run before comparing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import yaml

from aiq_sync.bench.measure import measure
from aiq_sync.landing import Landing

SOURCE = "pos"
TIMEZONE = "America/Denver"
FIRST_DAY = date(2025, 11, 1)
DAYS = 365
STORES = ("101", "102", "103", "104", "105")
CATEGORIES = ("Flower", "Edibles", "Vapes", "Pre-Rolls", "Topicals")
COLUMNS = {
    "transaction_id": "ticket_id",
    "item_id": "sku",  # the product's id, unique within a ticket (the lines' key)
    "customer_id": "customer_no",
    "location_id": "store_code",
    "product_name": "product",
    "category": "category",
    "vendor": "vendor",
    "quantity": "qty",
    "subtotal": "gross",
    "discount": "discount",
    "tax": "tax",
    "email": "email",
    "phone": "phone",
    "patient_name": "customer_name",
    "postal_code": "postal_code",
    "sold_at": "completed_at",
}  # the order of the generated tuples; `line_no` follows (the table's key, not mapped)
PRODUCTS = 2_000


def _lines(n: int) -> Iterator[tuple]:
    """n sale lines in time order; every value derives from the line's position."""
    customers = max(10, n // 8)
    step = DAYS * 86_400 / n
    start = datetime.combine(FIRST_DAY, datetime.min.time())
    ticket, line_no, lines_in_ticket = 0, 0, 1
    for i in range(n):
        if line_no == lines_in_ticket:
            ticket, line_no, lines_in_ticket = ticket + 1, 0, 1 + ticket * 7 % 4
        line_no += 1
        c = ticket * 7919 % customers
        product = (i * 31 + ticket) % PRODUCTS  # 31 apart: distinct within a ticket
        qty = 1 + i % 3
        gross = f"{qty * (5 + product % 60)}.{product % 100:02d}"
        yield (
            f"T{ticket:08d}",
            f"SKU{product:05d}",
            f"C{c:07d}",
            STORES[c % len(STORES)],
            f"Product {product}",
            CATEGORIES[product % len(CATEGORIES)],
            f"Vendor {product % 40}",
            qty,
            gross,
            "1.00" if i % 9 == 0 else "0.00",
            f"{(product % 90) / 10:.2f}",
            None if c % 10 == 0 else f"customer{c}@example.com",
            None if c % 7 == 0 else f"916{200 + c // 10_000 % 800:03d}{c % 10_000:04d}",
            f"First{c % 997} Last{c}",
            f"{80_000 + c % 900:05d}",
            (start + timedelta(seconds=int(i * step))).strftime("%Y-%m-%d %H:%M:%S"),
            line_no,
        )


def build_database(path: Path, lines: int) -> Path:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    names = [*COLUMNS.values(), "line_no"]
    con.execute(
        f"CREATE TABLE sale_lines ({', '.join(names)}, "
        "PRIMARY KEY (ticket_id, line_no)) WITHOUT ROWID"
    )
    con.executemany(f"INSERT INTO sale_lines VALUES ({', '.join('?' * len(names))})", _lines(lines))
    con.execute("CREATE INDEX sale_lines_completed_at ON sale_lines (completed_at)")
    con.commit()
    con.close()
    return path


def write_config(workdir: Path, duckdb_settings: dict | None = None) -> Path:
    config = {
        "warehouse": str(workdir / "aiq.duckdb"),
        "duckdb": duckdb_settings or {},
        "landing": str(workdir / "landing"),
        "schedule": {"timezone": TIMEZONE},
        "stores": [{"id": f"store-{k}", "name": f"Store {k}", "keys": {SOURCE: k}} for k in STORES],
        "sources": [
            {
                "name": SOURCE,
                "type": "sql",
                "url_env": "BENCH_POS_URL",
                "timezone": TIMEZONE,
                "start_date": FIRST_DAY.isoformat(),
                "lookback_days": 0,
                "entities": {
                    "lines": {"table": "sale_lines", "cursor": "completed_at", "columns": COLUMNS}
                },
            }
        ],
    }
    path = workdir / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("aiq-sync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "aiq_sync.cli"]


def run_sql_memory(lines: int, workdir: Path, duckdb_settings: dict | None = None) -> dict:
    """Build the database, sync it in a child process, return the measurements.
    `duckdb_settings`: the config's `duckdb` section (memory_limit, threads)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("landing", "aiq.duckdb", "aiq.duckdb.wal"):
        target = workdir / stale
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    built = time.perf_counter()
    db = build_database(workdir / "pos.sqlite", lines)
    build_s = time.perf_counter() - built
    config = write_config(workdir, duckdb_settings)
    last_day = FIRST_DAY + timedelta(days=DAYS - 1)
    command = [*_cli(), "--config", str(config), "run", "--from", str(FIRST_DAY)]
    command += ["--to", str(last_day)]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # ephemeral instance
    env["BENCH_POS_URL"] = f"sqlite:///{db}"
    log_path = workdir / "run.log"
    measured = measure(command, env, log_path)
    landed = sum(m.rows for m in Landing(workdir / "landing").manifests(SOURCE, "lines"))
    loaded = sales = personas = products = 0
    if (workdir / "aiq.duckdb").exists():
        with duckdb.connect(str(workdir / "aiq.duckdb"), read_only=True) as con:
            loaded, sales, personas, products = con.execute(
                "SELECT (SELECT count(*) FROM core.sale_items), (SELECT count(*) FROM "
                "core.sales), (SELECT count(*) FROM core.personas), "
                "(SELECT count(*) FROM core.products)"
            ).fetchone()
    return {
        "lines": lines,
        "duckdb": duckdb_settings or "(defaults)",
        "exit_code": measured.exit_code,
        "wall_s": round(measured.wall_s, 1),
        "cpu_s": round(measured.cpu_s, 1),  # steadier than wall when shared
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_during": measured.peak_during,  # the run's last log line at the sampled peak
        "rows_landed": landed,
        "rows_loaded": loaded,
        "sales": sales,
        "personas": personas,
        "products": products,
        "database_build_s": round(build_s, 1),
        "log": str(log_path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--memory-limit", help="the config's duckdb.memory_limit")
    parser.add_argument("--threads", type=int, help="the config's duckdb.threads")
    args = parser.parse_args(argv)
    settings = {
        k: v for k, v in (("memory_limit", args.memory_limit), ("threads", args.threads)) if v
    }
    if args.workdir:
        result = run_sql_memory(args.lines, args.workdir, settings)
    else:
        with tempfile.TemporaryDirectory(prefix="aiq-bench-sql-") as tmp:
            result = run_sql_memory(args.lines, Path(tmp), settings)
            result["log"] = "(removed with the temp folder)"
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    return 0 if result["exit_code"] == 0 and result["rows_loaded"] == result["rows_landed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""`aiq-sync` command line.

  aiq-sync check                      validate the config (exit 2 with one line per problem)
  aiq-sync run [--source S] [--from D --to D] [--force]
                                      land and load in-process through the Dagster assets
  aiq-sync summary                    rows per table, quarantine, unmapped stores
  aiq-sync sql "SELECT ..."           run a read-only query on the warehouse
  aiq-sync loyalty purge --source S --reason enroll_after
                                      remove members a rule enrolled (membership is sticky)
  aiq-sync contact-sync --source S [--dry-run]
                                      create the source's new shoppers as store customers
  aiq-sync sandbox bigcommerce ...    serve a fake API on loopback (see --help)
  aiq-sync bench [--scale 1.0]        full and nightly sync vs the fetch floor and dlt

The `run` command is the one place this package reaches into the Dagster layer (`assets`),
imported lazily so the core stays importable without it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import duckdb

from aiq_sync import reports, warehouse
from aiq_sync.config import AppConfig, ConfigError, FileDropSource, load_config, missing_secrets

EXIT_CONFIG = 2


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiq-sync", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", help="config file (default: $AIQ_SYNC_CONFIG or ./aiq_sync.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the config and what it points at")
    run = sub.add_parser("run", help="sync now, in-process")
    run.add_argument("--source", action="append", help="only this source (repeatable)")
    run.add_argument("--from", dest="start", type=_date, help="first day of the window")
    run.add_argument("--to", dest="end", type=_date, help="last day of the window (inclusive)")
    run.add_argument("--force", action="store_true", help="re-land partitions even if unchanged")
    sub.add_parser("summary", help="print the warehouse summary")
    sql = sub.add_parser("sql", help="run a read-only SQL query on the warehouse")
    sql.add_argument("query")
    loyalty = sub.add_parser("loyalty", help="loyalty maintenance")
    loyalty_sub = loyalty.add_subparsers(dest="loyalty_command", required=True)
    purge = loyalty_sub.add_parser("purge", help="remove members enrolled by a rule")
    purge.add_argument("--source", required=True)
    purge.add_argument("--reason", required=True, help="e.g. enroll_after")
    contacts = sub.add_parser("contact-sync", help="BigCommerce contact sync (sync_contacts)")
    contacts.add_argument("--source", required=True)
    contacts.add_argument(
        "--dry-run", action="store_true", help="list who would be created; create nothing"
    )
    sandbox = sub.add_parser("sandbox", help="serve a local fake of a source's API", add_help=False)
    sandbox.add_argument("kind", choices=sorted(SANDBOXES))
    sandbox.add_argument("args", nargs=argparse.REMAINDER)
    bench = sub.add_parser("bench", help="benchmark the sync on loopback sandboxes (no config)")
    from aiq_sync.bench.harness import add_arguments as bench_arguments

    bench_arguments(bench)
    return parser


def check_problems(config: AppConfig) -> list[str]:
    """Problems the schema cannot see: missing secrets, missing folders, missing connectors."""
    from connectors.registry import has_connector  # connectors import aiq_sync, not reverse

    problems = missing_secrets(config)
    for source in config.sources:
        if not has_connector(source.source_type):
            problems.append(
                f"sources[{source.name}].type: the {source.source_type} connector is not "
                "available in this version"
            )
    if config.loyalty.opt_out_file:
        path = config.resolve(config.loyalty.opt_out_file)
        if not path.is_file():
            problems.append(f"loyalty.opt_out_file: {path} does not exist")
    from connectors.file_drop.location import check_location
    from connectors.registry import API_CONNECTORS
    from connectors.sql import check as check_sql

    for source in config.sources:
        if any(p.startswith(f"sources[{source.name}]") for p in problems):
            continue
        if isinstance(source, FileDropSource):
            problems += check_location(config, source)  # local folder or OneDrive
        elif source.source_type == "sql":
            problems += check_sql(source, config.source_timezone(source))

    for source in config.sources:  # API sources: token, scopes, time zone (frozen: no request)
        check = getattr(API_CONNECTORS.get(source.source_type), "check", None)
        if check and not any(p.startswith(f"sources[{source.name}]") for p in problems):
            problems += check(source, timezone=config.source_timezone(source))
    return problems


def _load(args: argparse.Namespace) -> AppConfig:
    return load_config(args.config)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    problems = check_problems(config)
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_CONFIG
    print(f"config OK: {len(config.sources)} source(s), {len(config.stores)} store(s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from assets.runner import run_sync  # Dagster layer, imported only for this command

    config = _load(args)
    if args.start and args.end and args.start > args.end:
        print(f"--from {args.start} is after --to {args.end}", file=sys.stderr)
        return EXIT_CONFIG
    for name in args.source or []:
        if name not in config.source_names:
            print(f"--source {name}: no such source; configured: {', '.join(config.source_names)}")
            return EXIT_CONFIG
    problems = check_problems(config)
    if problems:
        for problem in problems:
            print(problem)
        return EXIT_CONFIG
    outcome = run_sync(
        config, sources=args.source, start=args.start, end=args.end, force=args.force
    )
    with warehouse.open_warehouse(
        config.warehouse_path, read_only=True, settings=config.duckdb_settings
    ) as con:
        print(reports.render_summary(con, str(config.warehouse_path)))
    for label in outcome.warned_checks:
        print(f"check WARN  {label}")
    for label in outcome.failed_checks:
        print(f"check FAIL  {label}")
    for failure in outcome.failures:
        print(f"FAILED  {failure}", file=sys.stderr)
    return 0 if outcome.ok else 1


def cmd_summary(args: argparse.Namespace) -> int:
    config = _load(args)
    path = config.warehouse_path
    if not Path(path).exists():
        print(f"no warehouse at {path} yet: run `aiq-sync run` first")
        return 1
    with warehouse.open_warehouse(path, read_only=True, settings=config.duckdb_settings) as con:
        print(reports.render_summary(con, str(path)))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    config = _load(args)
    if not config.warehouse_path.exists():
        print(f"no warehouse at {config.warehouse_path} yet: run `aiq-sync run` first")
        return 1
    with warehouse.open_warehouse(
        config.warehouse_path, read_only=True, settings=config.duckdb_settings
    ) as con:
        con.sql(args.query).show(max_width=200, max_rows=50)
    return 0


def cmd_loyalty(args: argparse.Namespace) -> int:
    from aiq_sync.loyalty import purge_members

    config = _load(args)
    if args.source not in config.source_names:
        print(
            f"--source {args.source}: no such source; configured: {', '.join(config.source_names)}"
        )
        return EXIT_CONFIG
    if not config.warehouse_path.exists():
        print(f"no warehouse at {config.warehouse_path} yet: nothing to purge")
        return 1
    with warehouse.open_warehouse(config.warehouse_path, settings=config.duckdb_settings) as con:
        removed = purge_members(con, args.source, args.reason)
    print(f"removed {removed} member(s) of {args.source} enrolled for {args.reason}")
    rule = getattr(config.source(args.source), args.reason, None)
    if removed and rule is not None:
        print(
            f"note: sources[{args.source}].{args.reason} is still {rule}: the next run enrolls "
            "whoever qualifies again; remove it from the config to keep them out"
        )
    return 0


def cmd_contact_sync(args: argparse.Namespace) -> int:
    """The `<source>/contact_sync` asset's work (connectors.bigcommerce.contact_sync), now."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from aiq_sync.config import BigCommerceSource
    from connectors.bigcommerce import contact_sync as cs
    from connectors.bigcommerce.client import MissingToken, open_client

    config = _load(args)
    name = args.source
    if name not in config.source_names:
        print(f"--source {name}: no such source; configured: {', '.join(config.source_names)}")
        return EXIT_CONFIG
    source = config.source(name)
    if not isinstance(source, BigCommerceSource):
        print(f"--source {name}: contact sync needs a bigcommerce source, not {source.source_type}")
        return EXIT_CONFIG
    if not source.sync_contacts:
        print(f"--source {name}: sync_contacts is false; set sync_contacts: true to enable it")
        return EXIT_CONFIG
    if source.freeze:
        print(f"--source {name}: the source is frozen (use last backup): no request is made")
        return EXIT_CONFIG
    if not config.warehouse_path.exists():
        print(f"no warehouse at {config.warehouse_path} yet: run `aiq-sync run` first")
        return 1
    tz = config.source_timezone(source)
    today = datetime.now(ZoneInfo(tz)).date()
    try:
        client = open_client(source)
    except MissingToken as exc:
        print(exc)
        return EXIT_CONFIG
    with (
        client,
        warehouse.open_warehouse(
            config.warehouse_path, read_only=args.dry_run, settings=config.duckdb_settings
        ) as con,
    ):
        report = cs.sync_contacts(
            con, client, source, today=today, timezone=tz, dry_run=args.dry_run
        )
    print(cs.render_report(report))
    return 1 if report.error else 0


# sandbox kind -> module with main(argv); imported only when asked for
SANDBOXES = {
    "bigcommerce": "aiq_sync.sandbox.bigcommerce",
    "webjoint": "aiq_sync.sandbox.webjoint",
    "graph": "aiq_sync.sandbox.graph",
}


def cmd_sandbox(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(SANDBOXES[args.kind]).main(args.args)


COMMANDS = {
    "check": cmd_check,
    "run": cmd_run,
    "summary": cmd_summary,
    "sql": cmd_sql,
    "loyalty": cmd_loyalty,
    "sandbox": cmd_sandbox,
    "contact-sync": cmd_contact_sync,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sandbox":  # needs no config
        return cmd_sandbox(args)
    if args.command == "bench":  # needs no config: it writes its own
        from aiq_sync.bench.harness import run_from_args

        return run_from_args(args)
    try:
        return COMMANDS[args.command](args)
    except duckdb.Error as exc:  # a lock held by another process, a bad query, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"warehouse error: {first}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        if not Path(exc.path).is_file():
            print(
                f"config file {exc.path} not found (set AIQ_SYNC_CONFIG or pass --config)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        print(f"config {exc.path} is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

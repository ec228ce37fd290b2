"""A full sync of a BigCommerce and a Webjoint source with recognisable fake tokens, recorded
in a persistent Dagster instance and through vcrpy like the cassette tests record: neither
token appears in logs, printed output and run summary, exceptions, Dagster event logs and
metadata, DuckDB, landing files or cassettes. A second run with revoked tokens fails, and its
error texts carry no token either."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import vcr
import yaml

from aiq_sync import reports, warehouse
from aiq_sync.config import load_config
from assets.runner import run_sync
from connectors.webjoint import api
from tests.faults.conftest import BC_ENV, DAYS, TZ, WJ_ENV, bc_sandbox, today, wj_sandbox

pytestmark = pytest.mark.e2e

BC_SECRET = "tok_SECRET_bc_e2e_9f3a61d2"
WJ_SECRET = "key_SECRET_wj_e2e_4b7c08e5"
SECRETS = (BC_SECRET, WJ_SECRET)


def _files_with(root: Path, secrets: tuple[str, ...]) -> list[str]:
    """Files under `root` whose bytes contain a secret (as UTF-8 or UTF-16, any case)."""
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes().lower()
        for secret in secrets:
            for encoded in (secret.lower().encode(), secret.lower().encode("utf-16-le")):
                if encoded in data:
                    hits.append(f"{path.relative_to(root)}: {secret}")
    return hits


def test_a_full_sync_never_stores_or_prints_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(BC_ENV, BC_SECRET)
    monkeypatch.setenv(WJ_ENV, WJ_SECRET)
    start = (today() - timedelta(days=DAYS)).isoformat()
    lines: list[str] = []
    with (
        bc_sandbox(token=BC_SECRET) as bc,
        wj_sandbox(api_key=WJ_SECRET, chaos={"server_error": 1, "truncated_json": 1}) as wj,
    ):
        raw = {
            "warehouse": "data/aiq.duckdb",
            "landing": "data/landing",
            "schedule": {"timezone": TZ},
            "stores": [{"id": "downtown", "name": "Downtown", "keys": {"bc": "1", "wj": "51"}}],
            "sources": [
                {"name": "bc", "type": "bigcommerce", "api_path": bc.api_path,
                 "access_token_env": BC_ENV, "timezone": TZ, "start_date": start},
                {"name": "wj", "type": "webjoint", "base_url": wj.base_url,
                 "api_key_env": WJ_ENV, "company_id": 7, "timezone": TZ, "start_date": start},
            ],
        }  # fmt: skip
        (tmp_path / "aiq_sync.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        config = load_config(tmp_path / "aiq_sync.yaml")
        instance = dg.DagsterInstance.get()
        recorder = vcr.VCR(
            cassette_library_dir=str(tmp_path / "cassettes"),
            record_mode="all",
            filter_headers=["X-Auth-Token", (api.AUTH_HEADER, "REDACTED")],
            decode_compressed_response=True,
        )
        with recorder.use_cassette("sync.yaml"):
            ok = run_sync(config, instance=instance, out=lines.append)
        # Revoked tokens: every extraction fails with an auth error.
        monkeypatch.setenv(BC_ENV, BC_SECRET + "-revoked")
        monkeypatch.setenv(WJ_ENV, WJ_SECRET + "-revoked")
        failed = run_sync(config, instance=instance, out=lines.append)
    assert ok.ok, ok.failures
    assert not failed.ok and any("401" in f for f in failed.failures), failed.failures
    with warehouse.open_warehouse(config.warehouse_path, read_only=True) as con:
        counts = reports.table_counts(con)
        lines.append(reports.render_summary(con, str(config.warehouse_path)))
        varchar = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR' AND table_schema IN ('core', 'loyalty', 'ops', 'main')"
        ).fetchall()
        in_tables = [
            f"{s}.{t}.{c}"
            for s, t, c in varchar
            for secret in SECRETS
            if con.execute(
                f'SELECT count(*) FROM "{s}"."{t}" WHERE "{c}" ILIKE ?', [f"%{secret}%"]
            ).fetchone()[0]
        ]
    assert counts["core.sales"] > 0 and counts["core.personas"] > 0
    runs = instance.get_runs()
    assert len(runs) >= 6
    events = "\n".join(repr(e) for run in runs for e in instance.all_logs(run.run_id))
    assert "401" in events  # the failures are recorded, with their errors
    texts = {
        "printed output and run summary": "\n".join(lines),
        "exceptions (run failures)": "\n".join(ok.failures + failed.failures),
        "log records": caplog.text,
        "Dagster event logs and metadata": events,
    }
    leaks = [name for name, text in texts.items() for s in SECRETS if s.lower() in text.lower()]
    assert leaks == []
    assert in_tables == []
    assert _files_with(tmp_path / "data", SECRETS) == []  # DuckDB file and WAL, landing
    assert _files_with(home, SECRETS) == []  # run and event storage, compute logs
    cassette = tmp_path / "cassettes" / "sync.yaml"
    assert cassette.stat().st_size > 0
    assert _files_with(tmp_path / "cassettes", SECRETS) == []
    # The committed cassettes were recorded with the same filters: no credential in them.
    committed = Path(__file__).parent / "cassettes"
    for path in committed.rglob("*.yaml"):
        for interaction in yaml.safe_load(path.read_text(encoding="utf-8"))["interactions"]:
            headers = {k.lower(): v for k, v in interaction["request"]["headers"].items()}
            assert "x-auth-token" not in headers, path
            assert headers.get(api.AUTH_HEADER.lower(), ["REDACTED"]) == ["REDACTED"], path

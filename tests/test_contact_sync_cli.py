"""`aiq-sync contact-sync --source S [--dry-run]` end to end: a real DuckDB warehouse holding
shoppers of a file-drop source, the BigCommerce sandbox over loopback recording every POST.
A dry run lists who would be created and sends no POST; a real run creates them; a re-run
creates none; misuse exits 2 with one line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from aiq_sync import warehouse
from aiq_sync.cli import main
from aiq_sync.sandbox.bigcommerce import BigCommerceSandbox

pytestmark = pytest.mark.e2e

TOKEN = "tok_CLI_contacts_9b2e"
TZ = "America/Chicago"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BC_CLI_TOKEN", TOKEN)


def _persona(key: str, email: str | None, phone: str | None, first: str, last: str) -> dict:
    source, src_id = key.split(":", 1)
    return {
        "persona_key": key,
        "source": source,
        "source_type": "file_drop",
        "src_id": src_id,
        "first_name": first,
        "last_name": last,
        "email": email,
        "phone": phone,
        "created_at": datetime.now(UTC),  # first seen today: after contact sync is enabled
        "_version": "v1",
    }


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    """Config with the sandbox store (contact sync on), one without it, and a drop source; a
    warehouse with four drop shoppers: three new, one the store already has (by e-mail)."""
    with BigCommerceSandbox(orders=0, customers=20, token=TOKEN) as sb:
        (tmp_path / "drops").mkdir()
        bc = {"type": "bigcommerce", "api_path": sb.api_path, "access_token_env": "BC_CLI_TOKEN"}
        config = {
            "warehouse": "aiq.duckdb",
            "landing": "landing",
            "schedule": {"cron": "0 3 * * *", "timezone": TZ},
            "sources": [
                {"name": "bc", **bc, "sync_contacts": True},
                {"name": "bc-off", **bc},
                {"name": "drops", "type": "file_drop", "location": "./drops"},
            ],
        }
        path = tmp_path / "aiq_sync.yaml"
        path.write_text(yaml.safe_dump(config))
        existing = sb.data.customer_record(3)["email"].lower()
        rows = [
            _persona("drops:1", "ana@example.com", "+15125550101", "Ana", "Ruiz"),
            _persona("drops:2", "bo@example.com", None, "Bo", "Chen"),
            _persona("drops:3", "cy@example.com", "+15125550103", "Cy", "Okafor"),
            _persona("drops:4", existing, None, "Dee", "Known"),
        ]
        with warehouse.open_warehouse(tmp_path / "aiq.duckdb") as con:
            warehouse.merge(con, "core.personas", pa.Table.from_pylist(rows), ("persona_key",))
        yield sb, str(path)


def posts(sb: BigCommerceSandbox) -> int:
    return sb.counters()["by_endpoint"].get("POST /v3/customers", 0)


def test_dry_run_lists_then_the_real_run_creates_once(setup: Any, capsys: Any) -> None:
    sb, config = setup
    assert main(["--config", config, "contact-sync", "--source", "bc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bc: dry run, 3 customer(s) would be created" in out
    table = out.splitlines()[1:6]
    assert table[0].split() == ["email", "phone", "name", "source"]
    assert "ana@example.com  +15125550101  Ana Ruiz" in out and "drops" in table[2]
    assert "1 matched an existing customer" in out
    assert TOKEN not in out
    assert posts(sb) == 0 and sb.counters()["customers_created"] == 0

    assert main(["--config", config, "contact-sync", "--source", "bc"]) == 0
    out = capsys.readouterr().out
    assert "bc: 3 customer(s) created" in out
    assert posts(sb) == 1 and sb.counters()["customers_created"] == 3
    created = {c["email"]: c for c in sb.data.created_customers.values()}
    assert created["cy@example.com"]["last_name"] == "Okafor"

    assert main(["--config", config, "contact-sync", "--source", "bc"]) == 0
    assert "bc: 0 customer(s) created" in capsys.readouterr().out
    assert posts(sb) == 1 and sb.counters()["customers_created"] == 3


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nope", "--source nope: no such source; configured: bc, bc-off, drops"),
        ("drops", "--source drops: contact sync needs a bigcommerce source, not file_drop"),
        ("bc-off", "--source bc-off: sync_contacts is false; set sync_contacts: true"),
    ],
)
def test_misuse_exits_2_with_one_line(setup: Any, capsys: Any, source: str, message: str) -> None:
    sb, config = setup
    assert main(["--config", config, "contact-sync", "--source", source, "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and out.startswith(message)
    assert sb.counters()["requests_total"] == 0


def test_a_missing_token_variable_exits_2_naming_it(
    setup: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, config = setup
    monkeypatch.delenv("BC_CLI_TOKEN")
    assert main(["--config", config, "contact-sync", "--source", "bc"]) == 2
    out = capsys.readouterr().out.strip()
    assert out == "sources[bc].access_token_env: environment variable BC_CLI_TOKEN is not set"
    assert sb.counters()["requests_total"] == 0

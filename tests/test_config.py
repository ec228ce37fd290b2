"""Config validation: every mistake is one line naming the field path and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aiq_sync.cli import main
from aiq_sync.config import ConfigError, load_config, missing_secrets, parse_config

BASE = {
    "stores": [{"id": "midtown", "name": "Midtown", "keys": {"drops": "101"}}],
    "sources": [{"name": "drops", "type": "file_drop", "location": "drops"}],
}


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.problems


def with_source(**fields: object) -> dict:
    return {**BASE, "sources": [{**BASE["sources"][0], **fields}]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (with_source(enroll_after="2024-13-01"), "sources[drops].enroll_after: "),
        (with_source(enrol_after="2024-01-01"), "sources[drops].enrol_after: unknown field"),
        (with_source(type="shopify"), "sources[drops]: unknown source type 'shopify'"),
        (with_source(name="Bad Name"), "sources[Bad Name].name: source name 'Bad Name'"),
        (with_source(timezone="Mars/Base"), "sources[drops].timezone: unknown time zone"),
        (with_source(lookback_days=90), "sources[drops].lookback_days: "),
        (with_source(location="s3://bucket/x"), "sources[drops].location: location scheme 's3'"),
        (with_source(enroll_after="2024-01-01"), "enroll_after is set but age_gate_confirmed"),
        (with_source(sms_double_opt_in_after="2024-01-01"), "age_gate_confirmed is not true"),
        (with_source(sync_contacts=True), "sync_contacts is only available on bigcommerce"),
        ({**BASE, "schedule": {"cron": "every night"}}, "schedule.cron: cron 'every night'"),
        ({**BASE, "quarantine_threshold": 2}, "quarantine_threshold: "),
        ({**BASE, "wherehouse": "x.duckdb"}, "wherehouse: unknown field"),
        (
            {**BASE, "sources": [{"name": "drops", "location": "drops"}]},
            "sources[drops]: missing field 'type'",
        ),
        (
            {**BASE, "sources": [{"type": "file_drop", "name": "drops"}]},
            "sources[drops].location: required field is missing",
        ),
        (
            {**BASE, "sources": BASE["sources"] * 2},
            "sources: duplicate source name(s) drops",
        ),
        (
            {**BASE, "stores": [{"id": "x", "name": "X", "keys": {"nope": "1"}}]},
            "stores[x].keys.nope: no source named 'nope'",
        ),
        (
            {
                **BASE,
                "stores": [
                    {"id": "a", "name": "A", "keys": {"drops": "1"}},
                    {"id": "b", "name": "B", "keys": {"drops": ["2", "1"]}},
                ],
            },
            "stores[b].keys.drops: location key '1' is already mapped to store 'a'",
        ),
    ],
)
def test_each_mistake_names_its_field(raw: dict, expected: str) -> None:
    found = problems(raw)
    assert any(expected in p for p in found), found


def test_several_mistakes_are_all_reported_one_line_each() -> None:
    raw = {
        **BASE,
        "schedule": {"cron": "x", "timezone": "Nowhere/City"},
        "sources": [{"name": "drops", "type": "file_drop", "location": "d", "freeze": "maybe"}],
    }
    found = problems(raw)
    assert len(found) == 3, found
    assert all("\n" not in p for p in found)
    assert {p.split(":")[0] for p in found} == {
        "schedule.cron",
        "schedule.timezone",
        "sources[drops].freeze",
    }


def test_valid_config_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump({**BASE, "warehouse": "../data/w.duckdb"}), encoding="utf-8")
    config = load_config(path)
    assert config.warehouse_path == (tmp_path / "data" / "w.duckdb").resolve()
    assert config.store_map() == {("drops", "101"): "midtown"}
    assert config.source_timezone(config.source("drops")) == "UTC"


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "aiq_sync.yaml"
    path.write_text("sources:\n  - name: drops\n   type: file_drop\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line 3" in caught.value.problems[0]


def test_missing_secret_names_field_and_variable_but_not_value() -> None:
    class WithSecret:
        name = "bc"
        secret_envs = {"access_token_env": "BC_TOKEN"}

    class Config:
        sources = [WithSecret()]

    assert missing_secrets(Config(), {}) == [  # type: ignore[arg-type]
        "sources[bc].access_token_env: environment variable BC_TOKEN is not set"
    ]
    assert missing_secrets(Config(), {"BC_TOKEN": "s3cr3t"}) == []  # type: ignore[arg-type]


def test_check_command_exits_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "aiq_sync.yaml"
    path.write_text(
        yaml.safe_dump(with_source(enroll_after="soon", timezone="Nowhere")), encoding="utf-8"
    )
    assert main(["--config", str(path), "check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"config {path} is invalid:"
    assert len(err) == 3
    assert any("sources[drops].timezone" in e for e in err)


def test_check_command_reports_a_missing_drop_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    assert main(["--config", str(path), "check"]) == 2
    assert "sources[drops].location: folder" in capsys.readouterr().out
    (tmp_path / "drops").mkdir()
    assert main(["--config", str(path), "check"]) == 0


BC = {
    "name": "bc",
    "type": "bigcommerce",
    "api_path": "https://api.bigcommerce.com/stores/abc123/v3/",
    "access_token_env": "BC_TOKEN",
}


def test_bigcommerce_store_hash_comes_from_the_api_path() -> None:
    config = parse_config({"sources": [BC]})
    source = config.sources[0]
    assert source.store_hash == "abc123"
    assert source.store_root == "https://api.bigcommerce.com/stores/abc123/"
    assert source.secret_envs == {"access_token_env": "BC_TOKEN"}


def test_a_pasted_token_is_rejected_without_being_echoed() -> None:
    found = problems({"sources": [{**BC, "access_token_env": "tok_8f7a6s5d9"}]})
    assert found == [
        "sources[bc]: access_token_env must name an environment variable (like BC_MAIN_TOKEN) "
        "that holds the secret, not the secret itself"
    ]
    assert "tok_8f7a6s5d9" not in " ".join(found)


def test_bigcommerce_api_path_must_carry_a_store_hash() -> None:
    found = problems({"sources": [{**BC, "api_path": "https://api.bigcommerce.com/v3/"}]})
    assert found[0].startswith("sources[bc].api_path: api_path ")


def test_webjoint_defaults_to_every_facility() -> None:
    config = parse_config(
        {"sources": [{"name": "wj", "type": "webjoint", "api_key_env": "WJ_KEY", "company_id": 7}]}
    )
    assert config.sources[0].facility_ids == []
    assert config.sources[0].base_url == "https://app.webjoint.com/prod/api/"


def test_check_command_reports_a_missing_opt_out_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "drops").mkdir()
    path = tmp_path / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump({**BASE, "loyalty": {"opt_out_file": "stops.csv"}}))
    assert main(["--config", str(path), "check"]) == 2
    assert (
        f"loyalty.opt_out_file: {tmp_path / 'stops.csv'} does not exist" in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (with_source(timezone="America"), "sources[drops].timezone: unknown time zone 'America'"),
        ({**BASE, "landing": "s3://bucket/landing"}, "landing: URLs are not supported yet (s3://)"),
        (
            {**BASE, "sources": [BASE["sources"][0], {**BASE["sources"][0], "name": "drops_"}]},
            None,
        ),
        (
            {
                **BASE,
                "stores": [],
                "sources": [
                    {"name": "pos-a", "type": "file_drop", "location": "a"},
                    {"name": "pos_a", "type": "file_drop", "location": "b"},
                ],
            },
            "sources: names pos-a, pos_a differ only by '-' and '_'",
        ),
    ],
)
def test_more_mistakes(raw: dict, expected: str | None) -> None:
    if expected is None:
        parse_config(raw)  # 'drops' and 'drops_' are distinct after folding: fine
        return
    assert any(expected in p for p in problems(raw)), problems(raw)


def test_sql_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "aiq_sync.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    assert main(["--config", str(path), "sql", "SELECT 1"]) == 1
    assert "no warehouse at" in capsys.readouterr().out
    from aiq_sync import warehouse

    with warehouse.open_warehouse(tmp_path / "data" / "aiq.duckdb"):
        pass
    assert main(["--config", str(path), "sql", "SELECT * FROM no_such_table"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warehouse error: Catalog Error")

"""OneDrive drop locations in the config: the location, the three secrets by name, URLs."""

from __future__ import annotations

import pytest

from aiq_sync.config import ConfigError, FileDropSource, missing_secrets, parse_config

OD = {
    "name": "od",
    "type": "file_drop",
    "location": "onedrive://b!AbC-123_x/Retail Drops/Daily",
    "tenant_id_env": "OD_TENANT",
    "client_id_env": "OD_CLIENT",
    "client_secret_env": "OD_SECRET",
}


def problems(**fields: object) -> list[str]:
    raw = {k: v for k, v in {**OD, **fields}.items() if v is not None}  # None: field left out
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [raw]})
    return caught.value.problems


def test_onedrive_location_parts_and_secret_names() -> None:
    source = parse_config({"sources": [OD]}).sources[0]
    assert isinstance(source, FileDropSource) and source.is_onedrive
    assert source.onedrive_drive_id == "b!AbC-123_x"
    assert source.onedrive_folder == "Retail Drops/Daily"
    assert source.graph_base_url is None  # the real Graph unless the sandbox is named
    assert missing_secrets(parse_config({"sources": [OD]}), {"OD_TENANT": "t"}) == [
        "sources[od].client_id_env: environment variable OD_CLIENT is not set",
        "sources[od].client_secret_env: environment variable OD_SECRET is not set",
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"client_secret_env": None}, "client_secret_env required for an onedrive:// location"),
        ({"location": "onedrive:///Drops"}, "names no drive"),
        ({"location": "s3://bucket/x"}, "location scheme 's3'"),
        ({"graph_base_url": "ftp://x"}, "graph_base_url: 'ftp://x' is not an http(s) URL"),
        ({"client_secret_env": "p@ss w0rd"}, "client_secret_env must name an environment"),
        (
            {"location": "drops", "tenant_id_env": None, "client_id_env": None},
            "client_secret_env only apply to onedrive:// locations",
        ),
    ],
)
def test_onedrive_mistakes_are_one_line_each(fields: dict, expected: str) -> None:
    found = problems(**fields)
    assert any(expected in p for p in found), found
    assert not any("p@ss w0rd" in p for p in found)


def test_base_urls_get_a_trailing_slash() -> None:
    source = parse_config(
        {"sources": [{**OD, "graph_base_url": "http://127.0.0.1:9/v1.0"}]}
    ).sources[0]
    assert isinstance(source, FileDropSource)
    assert source.graph_base_url == "http://127.0.0.1:9/v1.0/"

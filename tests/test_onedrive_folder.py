"""OneDrive drop folder against the loopback Graph sandbox: token, delta, 410, downloads.

No Dagster here: `OneDriveFolder` is the `DropLocation` the sensor and the landing asset use.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiq_sync.config import FileDropSource, parse_config
from aiq_sync.http import RetryPolicy
from aiq_sync.sandbox.graph import GraphSandbox
from connectors.file_drop.location import DropVanished
from connectors.onedrive import OneDriveError, OneDriveFolder, open_onedrive_folder

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05, max_total_wait=30)
CSV = b"TransactionID,Patient Number,Item ID\nT1,C1,I1\n"


def onedrive_source(sb: GraphSandbox, **fields: object) -> FileDropSource:
    raw = {
        "name": "od",
        "type": "file_drop",
        "location": sb.location,
        "tenant_id_env": "OD_TENANT",
        "client_id_env": "OD_CLIENT",
        "client_secret_env": "OD_SECRET",
        "graph_base_url": sb.graph_base_url,
        "login_base_url": sb.login_base_url,
        **fields,
    }
    source = parse_config({"sources": [raw]}).sources[0]
    assert isinstance(source, FileDropSource)
    return source


def env_for(sb: GraphSandbox, **override: str) -> dict[str, str]:
    return {
        "OD_TENANT": sb.tenant_id,
        "OD_CLIENT": sb.client_id,
        "OD_SECRET": sb.client_secret,
        **override,
    }


@pytest.fixture
def sandbox() -> Iterator[GraphSandbox]:
    with GraphSandbox(page_size=3, client_secret="s3cr3t-Value~42") as sb:
        yield sb


@pytest.fixture
def open_folder(sandbox: GraphSandbox, tmp_path: Path) -> Iterator[Callable[..., OneDriveFolder]]:
    opened: list[OneDriveFolder] = []

    def build(env: dict[str, str] | None = None, **fields: object) -> OneDriveFolder:
        folder = open_onedrive_folder(
            onedrive_source(sandbox, **fields),
            tmp_path / "state.json",
            env if env is not None else env_for(sandbox),
            retry=FAST,
        )
        opened.append(folder)
        return folder

    yield build
    for folder in opened:
        folder.close()


def fingerprints(folder: OneDriveFolder) -> dict[str, str]:
    return {f.name: f.fingerprint for f in folder.list()}


def test_delta_lists_the_folder_then_only_changes(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder]
) -> None:
    for day in range(1, 8):
        sandbox.put_file(f"sales_2026-01-0{day}.csv", CSV)
    sandbox.put_file("notes.txt", b"not a drop")
    sandbox.put_file("old.csv", CSV, folder="Drops/archive")  # a sub-folder: not a drop
    sandbox.put_file("elsewhere.csv", CSV, folder="Other")
    folder = open_folder()

    first = fingerprints(folder)
    assert sorted(first) == [f"sales_2026-01-0{d}.csv" for d in range(1, 8)]
    assert folder.last_listing["mode"] == "full"
    assert sandbox.counters()["delta_pages"] > 3  # paged through nextLinks (3 a page)

    assert fingerprints(folder) == first  # nothing changed: same fingerprints
    assert folder.last_listing == {"mode": "delta", "reason": None, "changes": 0, "files": 8}

    sandbox.put_file("sales_2026-01-02.csv", CSV + b"T2,C2,I1\n")  # new content: new cTag
    sandbox.rename_file("sales_2026-01-03.csv", "sales_2026-01-03-fixed.csv")
    sandbox.delete_file("sales_2026-01-04.csv")
    sandbox.move_file("sales_2026-01-05.csv", "Other")
    sandbox.put_file("sales_2026-01-08.csv", CSV)
    after = fingerprints(folder)
    assert folder.last_listing["mode"] == "delta"
    assert sorted(set(after) - set(first)) == [
        "sales_2026-01-03-fixed.csv",
        "sales_2026-01-08.csv",
    ]
    assert sorted(set(first) - set(after)) == [
        "sales_2026-01-03.csv",
        "sales_2026-01-04.csv",
        "sales_2026-01-05.csv",
    ]
    assert after["sales_2026-01-02.csv"] != first["sales_2026-01-02.csv"]
    assert after["sales_2026-01-01.csv"] == first["sales_2026-01-01.csv"]
    renamed = next(f for f in folder.list() if f.name == "sales_2026-01-03-fixed.csv")
    assert renamed.item_id == sandbox.item_id("sales_2026-01-03-fixed.csv")  # tracked by id
    assert sandbox.counters()["downloads"] == 0  # listing never downloads


def test_410_gone_re_enumerates_and_yields_the_same_fingerprints(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder], tmp_path: Path
) -> None:
    for day in range(1, 6):
        sandbox.put_file(f"d{day}.csv", CSV)
    folder = open_folder()
    before = fingerprints(folder)
    sandbox.expire_delta_links()
    assert fingerprints(folder) == before
    assert folder.last_listing["mode"] == "full"
    assert "410" in folder.last_listing["reason"]
    state = folder.load_state()
    assert state is not None and state.full_enumerations == 2
    assert sandbox.counters()["delta_gone"] == 1
    # The new link works incrementally again.
    sandbox.put_file("d6.csv", CSV)
    assert sorted(fingerprints(folder)) == sorted([*before, "d6.csv"])
    assert folder.last_listing["mode"] == "delta"


def test_a_listing_that_fails_half_way_keeps_the_previous_link(
    sandbox: GraphSandbox, tmp_path: Path
) -> None:
    for day in range(1, 8):
        sandbox.put_file(f"d{day}.csv", CSV)
    source = onedrive_source(sandbox)
    once = RetryPolicy(max_attempts=1)
    folder = open_onedrive_folder(source, tmp_path / "s.json", env_for(sandbox), retry=once)
    try:
        folder.list()
        link = folder.load_state().delta_link  # type: ignore[union-attr]
        for day in range(8, 15):
            sandbox.put_file(f"d{day}.csv", CSV)
        sandbox.set_chaos({"delta_page_error": 1})  # the second page of the next delta: 500
        with pytest.raises(OneDriveError, match="500"):
            folder.list()
        assert folder.load_state().delta_link == link  # type: ignore[union-attr]
        assert len(fingerprints(folder)) == 14  # the next listing catches up from there
        assert folder.last_listing["mode"] == "delta"
    finally:
        folder.close()


def test_a_410_in_the_middle_of_paging_starts_over(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder]
) -> None:
    for day in range(1, 8):
        sandbox.put_file(f"d{day}.csv", CSV)
    folder = open_folder()
    fingerprints(folder)
    sandbox.put_file("d8.csv", CSV)
    sandbox.put_file("d9.csv", CSV)
    sandbox.page_size = 1  # so the next delta has a second page
    pages = folder.graph.pages
    expired: list[bool] = []

    def expire_after_first_page(first: str):  # the service resets while we page
        for number, page in enumerate(pages(first)):
            if number == 0 and not expired:
                expired.append(True)
                sandbox.expire_delta_links()
            yield page

    folder.graph.pages = expire_after_first_page  # type: ignore[method-assign]
    assert len(fingerprints(folder)) == 9
    assert sandbox.counters()["delta_gone"] == 1 and folder.last_listing["mode"] == "full"


def test_token_is_refreshed_before_expiry_and_after_a_revocation(
    tmp_path: Path,
) -> None:
    with GraphSandbox(token_lifetime=1.0) as sb:
        sb.put_file("a.csv", CSV)
        folder = open_onedrive_folder(onedrive_source(sb), tmp_path / "s.json", env_for(sb))
        try:
            assert [f.name for f in folder.list()] == ["a.csv"]
            time.sleep(1.0)  # past the refresh point (90 % of the lifetime)
            assert [f.name for f in folder.list()] == ["a.csv"]
            sb.revoke_tokens()  # a 401 makes the client sign in again, once
            assert [f.name for f in folder.list()] == ["a.csv"]
            counters = sb.counters()
        finally:
            folder.close()
    assert counters["tokens_issued"] == 3
    assert counters["by_status"].get("401") == 1


def test_throttling_honours_retry_after_through_the_shared_http_layer(
    open_folder: Callable[..., OneDriveFolder], sandbox: GraphSandbox
) -> None:
    sandbox.put_file("a.csv", CSV)
    sandbox.set_chaos({"throttle": 2, "retry_after_seconds": 0.25})
    folder = open_folder()
    started = time.monotonic()
    assert [f.name for f in folder.list()] == ["a.csv"]
    assert time.monotonic() - started >= 0.5
    stats = folder.request_stats()
    assert sandbox.counters()["throttled_429"] == 2
    # The token POST and the Graph GETs share the policy; both count their waits.
    assert stats["throttled_429"] + folder.graph.token.request_stats()["throttled_429"] == 2


def test_download_streams_to_disk_without_the_token_and_retries(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder], tmp_path: Path
) -> None:
    big = (b"TransactionID,Patient Number,Item ID\n" + b"T1,C1,I1\n" * 3_000_000)[:24_000_000]
    sandbox.put_file("big.csv", big)
    folder = open_folder()
    (drop,) = folder.list()
    sandbox.set_chaos({"download_url_expired": 1, "throttle": 1, "retry_after_seconds": 0.05})
    tracemalloc.start()
    try:
        path = folder.fetch(drop, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.read_bytes() == big
    assert peak < 8_000_000, peak  # 24 MB file, a chunk at a time
    counters = sandbox.counters()
    assert counters["download_with_auth_header"] == 0
    assert counters["download_url_expired"] == 1  # asked /content again for a fresh URL
    assert counters["by_status"]["302"] == 2
    assert folder.request_stats()["downloads"]["files"] == 1


def test_find_and_vanished_files(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder], tmp_path: Path
) -> None:
    sandbox.put_file("a b#1.csv", CSV)
    folder = open_folder()
    found = folder.find("a b#1.csv")
    assert found is not None and found.item_id == sandbox.item_id("a b#1.csv")
    assert folder.find("missing.csv") is None and folder.find("notes.txt") is None
    sandbox.delete_file("a b#1.csv")
    with pytest.raises(DropVanished):
        folder.fetch(found, tmp_path)


def test_failures_name_the_problem_never_the_secret(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder]
) -> None:
    secret = "Wr0ng-but-Secret~value"
    with pytest.raises(OneDriveError) as caught:
        open_folder(env_for(sandbox, OD_SECRET=secret)).list()
    message = str(caught.value)
    assert "401" in message and "AADSTS7000215" in message and "OD_SECRET" in message
    assert secret not in message and sandbox.client_secret not in message

    with pytest.raises(OneDriveError, match="AADSTS90002"):
        open_folder(env_for(sandbox, OD_TENANT="other-tenant")).list()
    with pytest.raises(OneDriveError, match="environment variable OD_CLIENT is not set"):
        open_folder({"OD_TENANT": "t", "OD_SECRET": "x"})
    with pytest.raises(OneDriveError, match="folder 'Nope' not found in drive"):
        open_folder(location=f"onedrive://{sandbox.drive_id}/Nope").list()
    with pytest.raises(OneDriveError, match="not found in drive"):
        open_folder(location="onedrive://b!other-drive/Drops").list()


def test_the_state_file_holds_no_secret(
    sandbox: GraphSandbox, open_folder: Callable[..., OneDriveFolder], tmp_path: Path
) -> None:
    sandbox.put_file("a.csv", CSV)
    folder = open_folder()
    folder.list()
    text = (tmp_path / "state.json").read_text()
    assert sandbox.client_secret not in text and "Bearer" not in text
    assert "deltaLink" not in text and "delta_link" in text
    assert "token=" in folder.load_state().delta_link  # type: ignore[union-attr]

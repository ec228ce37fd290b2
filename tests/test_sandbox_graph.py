"""The Graph sandbox speaks the protocol the OneDrive connector relies on (raw HTTP here)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from aiq_sync.sandbox.graph import GRAPH_SCOPE, GraphSandbox


@pytest.fixture
def sb() -> Iterator[GraphSandbox]:
    with GraphSandbox(page_size=2, token_lifetime=60, download_url_ttl=1) as sandbox:
        yield sandbox


def token(sb: GraphSandbox, **form: str) -> httpx.Response:
    body = {
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "scope": GRAPH_SCOPE,
        "grant_type": "client_credentials",
        **form,
    }
    return httpx.post(f"{sb.login_base_url}{form.pop('tenant', sb.tenant_id)}/oauth2/v2.0/token",
                      data=body)  # fmt: skip


def graph(sb: GraphSandbox, bearer: str) -> httpx.Client:
    return httpx.Client(base_url=sb.graph_base_url, headers={"Authorization": f"Bearer {bearer}"})


def test_token_endpoint_grants_client_credentials_and_explains_refusals(sb: GraphSandbox) -> None:
    ok = token(sb)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 60
    wrong = token(sb, client_secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert "AADSTS7000215" in wrong.text and "not-the-secret" not in wrong.text
    assert token(sb, scope="Files.Read.All").json()["error"] == "invalid_scope"
    assert token(sb, client_id="nope").json()["error"] == "unauthorized_client"
    assert token(sb, grant_type="password").json()["error"] == "unsupported_grant_type"
    other = httpx.post(f"{sb.login_base_url}other/oauth2/v2.0/token", data={})
    assert other.status_code == 400 and "AADSTS90002" in other.text


def test_graph_needs_a_live_token(sb: GraphSandbox) -> None:
    assert httpx.get(f"{sb.graph_base_url}drives/{sb.drive_id}/root").status_code == 401
    with graph(sb, "made-up") as client:
        answer = client.get(f"drives/{sb.drive_id}/root")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"


def follow(client: httpx.Client, url: str) -> tuple[list[dict], str, int]:
    """Every item of a delta listing, its deltaLink and the pages it took."""
    seen: list[dict] = []
    pages = 0
    while True:
        page = client.get(url).json()
        pages += 1
        seen += page["value"]
        if "@odata.nextLink" not in page:
            return seen, page["@odata.deltaLink"], pages
        url = page["@odata.nextLink"]


def test_delta_pages_then_returns_only_changes_and_410_after_a_reset(sb: GraphSandbox) -> None:
    for n in range(5):
        sb.put_file(f"f{n}.csv", b"x" * n)
    with graph(sb, token(sb).json()["access_token"]) as client:
        seen, delta_link, pages = follow(client, f"drives/{sb.drive_id}/root/delta")
        names = {i["name"] for i in seen}
        assert {"root", "Drops", "f0.csv", "f4.csv"} <= names and pages == 4
        assert all("path" not in i.get("parentReference", {}) for i in seen)  # like Graph
        f1 = next(i for i in seen if i["name"] == "f1.csv")

        sb.delete_file("f1.csv")
        sb.put_file("f2.csv", b"changed")
        changes, next_link, _ = follow(client, delta_link)
        by_id = {i["id"]: i for i in changes}
        assert by_id[f1["id"]]["deleted"] == {"state": "deleted"}
        assert {i.get("name") for i in changes} == {"f2.csv", "Drops", None}

        sb.expire_delta_links()
        gone = client.get(next_link)
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "resyncRequired"


def test_content_redirects_to_a_short_lived_pre_authenticated_url(sb: GraphSandbox) -> None:
    item = sb.put_file("a.csv", b"hello,world\n")
    with graph(sb, token(sb).json()["access_token"]) as client:
        answer = client.get(f"drives/{sb.drive_id}/items/{item}/content")
        assert answer.status_code == 302
        location = answer.headers["location"]
        by_path = client.get(f"drives/{sb.drive_id}/root:/Drops/a.csv").json()
        assert by_path["id"] == item and by_path["@microsoft.graph.downloadUrl"]
        children = client.get(f"drives/{sb.drive_id}/root:/Drops:/children").json()
        assert [c["name"] for c in children["value"]] == ["a.csv"]
    assert httpx.get(location).content == b"hello,world\n"  # no token needed
    time.sleep(1.1)
    assert httpx.get(location).status_code == 401  # expired
    assert sb.counters()["download_with_auth_header"] == 0


def test_throttling_answers_429_with_retry_after(sb: GraphSandbox) -> None:
    sb.set_chaos({"throttle": 1, "retry_after_seconds": 2})
    with graph(sb, "x") as client:
        answer = client.get(f"drives/{sb.drive_id}/root")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
    with GraphSandbox(rate=1, burst=1) as limited, graph(limited, "x") as client:
        statuses = [client.get(f"drives/{limited.drive_id}").status_code for _ in range(3)]
    assert 429 in statuses


def test_upload_and_delete_over_http(sb: GraphSandbox) -> None:
    with graph(sb, token(sb).json()["access_token"]) as client:
        made = client.put(f"drives/{sb.drive_id}/root:/Drops/new.csv:/content", content=b"a,b\n")
        assert made.status_code == 201 and made.json()["size"] == 4
        assert client.delete(f"drives/{sb.drive_id}/items/{made.json()['id']}").status_code == 204
    with pytest.raises(KeyError):
        sb.item_id("new.csv")


def test_main_serves_until_stopped() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aiq_sync.sandbox.graph", "--port", "0", "--client-secret", "s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Graph sandbox serving at http://127.0.0.1:")
        base = first.split(" at ", 1)[1].split(" ", 1)[0]
        answer = httpx.get(f"{base}drives/b!sandbox-drive/root")
        assert answer.status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)

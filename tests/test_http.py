"""ApiClient against real loopback HTTP: a scripted stdlib server and the BigCommerce sandbox."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from aiq_sync.http import (
    ApiClient,
    ApiError,
    FixedRateLimiter,
    HeaderQuotaRateLimiter,
    RetryPolicy,
    header_wait_seconds,
    imap_bounded,
    parse_json_body,
)
from aiq_sync.sandbox.bigcommerce import ENDPOINT_SCOPES, BigCommerceSandbox, Chaos, Fault

TOKEN = "tok_SUPERSECRET_0123456789"
RATE_HEADERS = {
    "X-Rate-Limit-Time-Window-Ms": "30000",
    "X-Rate-Limit-Time-Reset-Ms": "1500",
    "X-Rate-Limit-Requests-Quota": "150",
    "X-Rate-Limit-Requests-Left": "0",
}


# --------------------------------------------------------------------------------------------
# A scripted server: each path answers from a queue of canned responses, then repeats the last.
# --------------------------------------------------------------------------------------------


class Scripted:
    def __init__(self) -> None:
        self.scripts: dict[str, deque[tuple[int, dict[str, str], bytes]]] = {}
        self.last: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()

    def on(self, path: str, *responses: tuple[int, dict[str, str], Any]) -> None:
        queue = deque()
        for status, headers, body in responses:
            if not isinstance(body, bytes):
                body = b"" if body is None else json.dumps(body).encode()
            queue.append((status, headers, body))
        self.scripts[path] = queue

    def next(self, path: str, token: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            queue = self.scripts.get(path)
            if queue:
                self.last[path] = queue.popleft()
            status, headers, body = self.last.get(path, (404, {}, b'{"title":"nope"}'))
        # Servers sometimes echo what they were sent; the client must scrub it.
        return status, headers, body.replace(b"{token}", token.encode())


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, str]]:
    script = Scripted()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            status, headers, body = script.next(path, self.headers.get("X-Auth-Token", ""))
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            for name, value in headers.items():
                self.send_header(name, value)
            if status != 204:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 204:
                self.wfile.write(body)

        do_POST = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class FakeSleep:
    """Records requested waits instead of sleeping (tests must not wait for real)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(base_url: str, sleep: FakeSleep | None = None, **kwargs: Any) -> ApiClient:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, backoff_base=0.2, backoff_max=1.0))
    return ApiClient(
        base_url,
        headers={"X-Auth-Token": TOKEN, "Accept": "application/json"},
        sleep=sleep or FakeSleep(),
        name="test",
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# Pacing
# --------------------------------------------------------------------------------------------


def test_pacing_uses_the_quota_without_a_single_429() -> None:
    # 20 requests per 300 ms window (a 30 s window at time_scale 0.01), 120 requests, 6 threads.
    with BigCommerceSandbox(orders=10, quota=20, time_scale=0.01, token=TOKEN) as sb:
        limiter = HeaderQuotaRateLimiter()
        with make_client(
            sb.api_path, sleep=time.sleep, rate_limiter=limiter, max_concurrency=6
        ) as client:
            t0 = time.monotonic()
            results = client.map_concurrent(lambda _: client.get_json("v2/time"), range(120))
            elapsed = time.monotonic() - t0
        counters = sb.counters()
    assert all(r.status == 200 for r in results)
    assert counters["throttled_429"] == 0
    assert client.stats.as_dict()["throttled_429"] == 0
    # 120 requests need at least 6 windows (5 waits); using the quota fully, not much more.
    assert 5 * 0.3 * 0.9 <= elapsed < 6 * 0.3 + 1.5
    assert client.stats.as_dict()["rate_limit_wait_seconds"] > 0


def test_header_quota_limiter_waits_for_reset_when_nothing_is_left() -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    limiter = HeaderQuotaRateLimiter(clock=lambda: now[0], sleep=sleep)
    assert limiter.acquire() == 0.0
    headers = {
        **RATE_HEADERS,
        "X-Rate-Limit-Requests-Left": "1",
        "X-Rate-Limit-Time-Reset-Ms": "800",
    }
    limiter.release(httpx.Response(200, headers=headers))
    assert limiter.acquire() == 0.0  # one left
    waited = limiter.acquire()  # none left: sleep until reset (+ a small margin)
    assert 0.8 <= waited < 0.9 and sleeps == [waited]


def test_fixed_rate_limiter_spaces_requests() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    limiter = FixedRateLimiter(rate=10, burst=2, clock=lambda: now[0], sleep=sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]  # the burst
    assert waits[2:] == pytest.approx([0.1, 0.1, 0.1])


# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "reset_ms", "expected"), [("3", "1500", 3.0), ("1", "2500", 2.5)]
)
def test_429_with_headers_waits_the_longer_header(
    scripted: tuple[Scripted, str], retry_after: str, reset_ms: str, expected: float
) -> None:
    script, url = scripted
    headers = {**RATE_HEADERS, "X-Retry-After": retry_after, "X-Rate-Limit-Time-Reset-Ms": reset_ms}
    script.on("/v2/orders", (429, headers, {"status": 429}), (200, RATE_HEADERS, [{"id": 1}]))
    sleep = FakeSleep()
    with make_client(url, sleep) as client:
        resp = client.get_json("v2/orders", {"page": 1})
    assert resp.json == [{"id": 1}]
    assert sleep.calls == [pytest.approx(expected, abs=0.01)]
    stats = client.stats.as_dict()
    assert stats["throttled_429"] == 1 and stats["retries"] == 1
    assert stats["rate_limit_wait_seconds"] == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_5xx_back_off_with_jitter_then_succeed(
    scripted: tuple[Scripted, str], status: int
) -> None:
    script, url = scripted
    script.on("/v2/orders", (status, {}, {"x": 1}), (status, {}, None), (200, {}, [{"id": 7}]))
    sleep = FakeSleep()
    with make_client(url, sleep) as client:
        assert client.get_json("v2/orders").json == [{"id": 7}]
    # Full jitter: each wait is within [0, base * 2^(n-1)].
    assert len(sleep.calls) == 2
    assert 0 <= sleep.calls[0] <= 0.2 and 0 <= sleep.calls[1] <= 0.4
    assert script.hits["/v2/orders"] == 3
    assert client.stats.as_dict()["backoff_wait_seconds"] == pytest.approx(
        sum(sleep.calls), abs=2e-3
    )


def test_retry_after_on_503_is_honoured(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/drive/delta", (503, {"Retry-After": "7"}, None), (200, {}, {"value": []}))
    sleep = FakeSleep()
    with make_client(url, sleep) as client:
        assert client.get_json("drive/delta").json == {"value": []}
    assert sleep.calls == [7.0]


def test_bounded_attempts_then_clear_error_naming_the_endpoint(
    scripted: tuple[Scripted, str],
) -> None:
    script, url = scripted
    script.on("/v2/orders", (503, {}, {"title": "down"}))
    with make_client(url) as client, pytest.raises(ApiError) as err:
        client.get_json("v2/orders", {"min_date_modified": "2024-01-01T00:00:00Z"})
    e = err.value
    assert e.kind == "server_error" and e.status == 503 and e.attempts == 4
    assert "GET v2/orders" in str(e) and "503" in str(e) and "4 attempts" in str(e)
    assert "min_date_modified" not in str(e)  # no query string in messages
    assert script.hits["/v2/orders"] == 4


def test_total_wait_budget_bounds_retries(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    headers = {**RATE_HEADERS, "X-Retry-After": "20"}
    script.on("/v2/orders", (429, headers, None))
    policy = RetryPolicy(max_total_wait=30)
    with make_client(url, retry=policy) as client, pytest.raises(ApiError) as err:
        client.get_json("v2/orders")
    assert err.value.kind == "wait_budget" and script.hits["/v2/orders"] == 2


def test_post_is_not_retried_after_a_5xx(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/v3/customers", (503, {}, None), (200, {}, {"data": []}))
    with make_client(url) as client, pytest.raises(ApiError) as err:
        client.post_json("v3/customers", [{"email": "a@b.c"}])
    assert err.value.attempts == 1 and script.hits["/v3/customers"] == 1


def test_404_and_422_are_not_retried(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/v2/orders/9", (404, {}, [{"status": 404, "message": "not found"}]))
    script.on("/v3/customers", (422, {}, {"title": "bad", "errors": {"0.email": "missing"}}))
    with make_client(url) as client:
        with pytest.raises(ApiError) as err:
            client.get_json("v2/orders/9")
        assert err.value.kind == "not_found" and "GET v2/orders/9: 404" in str(err.value)
        with pytest.raises(ApiError) as err:
            client.post_json("v3/customers", [{}])
        assert err.value.kind == "client_error" and "0.email" in str(err.value)
    assert script.hits == {"/v2/orders/9": 1, "/v3/customers": 1}


def test_401_and_403_name_the_scope(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/v2/orders", (403, {}, {"status": 403, "title": "missing scope"}))
    script.on("/v3/customers", (401, {}, {"status": 401, "title": "Unauthorized"}))
    with make_client(url, scopes=ENDPOINT_SCOPES) as client:
        with pytest.raises(ApiError) as err:
            client.get_json("v2/orders")
        assert err.value.is_auth and err.value.scope == "Orders Read"
        assert "403" in str(err.value) and "'Orders Read'" in str(err.value)
        with pytest.raises(ApiError) as err:
            client.get_json("v3/customers")
        assert "401" in str(err.value) and "'Customers Read'" in str(err.value)
        with pytest.raises(ApiError) as err:
            client.get_json("v2/orders", scope="Orders Read (per call)")
        assert "'Orders Read (per call)'" in str(err.value)
    assert script.hits["/v2/orders"] == 2  # never retried


def test_scope_map_prefers_longest_and_method_specific_keys() -> None:
    client = ApiClient("http://127.0.0.1:9/", scopes=ENDPOINT_SCOPES)
    assert client.scope_for("POST", "/v3/customers") == "Customers Write"
    assert client.scope_for("GET", "v3/customers?email:in=x") == "Customers Read"
    assert client.scope_for("GET", "v2/orders/12/products") == "Orders Read"
    assert client.scope_for("GET", "v2/ordersX") is None
    client.close()


def test_sandbox_auth_errors_name_the_scope() -> None:
    with BigCommerceSandbox(orders=5, token=TOKEN, scopes={"Customers Read"}) as sb:
        with make_client(sb.api_path, scopes=ENDPOINT_SCOPES) as client:
            with pytest.raises(ApiError) as err:
                client.get_json("v2/orders")
            assert err.value.status == 403 and "'Orders Read'" in str(err.value)
            assert client.get_json("v3/customers").status == 200
        with ApiClient(sb.api_path, headers={"X-Auth-Token": "wrong"}, scopes=ENDPOINT_SCOPES) as c:
            with pytest.raises(ApiError) as err:
                c.get_json("v2/store")
            assert err.value.status == 401 and "'Information & Settings Read'" in str(err.value)


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


def test_204_and_empty_body_give_none(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/v2/orders", (204, {}, None))
    script.on("/v2/empty", (200, {}, b""))
    with make_client(url) as client:
        assert client.get_json("v2/orders").json is None
        assert client.get_json("v2/empty").json is None


def test_truncated_json_is_retried_then_succeeds(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/v2/orders", (200, {}, b'[{"id": 1, "na'), (200, {}, [{"id": 1}]))
    with make_client(url) as client:
        assert client.get_json("v2/orders").json == [{"id": 1}]
    assert client.stats.as_dict()["malformed_bodies"] == 1


def test_html_200_fails_clearly_after_bounded_retries(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    html = b"<html><body>Maintenance {token}</body></html>"
    script.on("/v2/orders", (200, {"Content-Type": "text/html"}, html))
    policy = RetryPolicy(max_malformed_retries=2, backoff_base=0.1)
    with make_client(url, retry=policy) as client, pytest.raises(ApiError) as err:
        client.get_json("v2/orders")
    e = err.value
    assert e.kind == "malformed" and e.status == 200 and e.attempts == 3
    assert "GET v2/orders" in str(e) and "text/html" in str(e) and "<html>" in str(e)
    assert TOKEN not in str(e) and TOKEN not in e.body_excerpt
    assert script.hits["/v2/orders"] == 3


def test_sandbox_chaos_faults_are_absorbed() -> None:
    chaos = Chaos(
        connection_reset=Fault(first=1, paths=("v2/time",)),
        truncated_json=Fault(first=1, paths=("v2/store",)),
        html_200=Fault(first=1, paths=("v2/orders/count",)),
        server_error=Fault(first=2, paths=("v2/orders",)),
        throttle_without_headers=Fault(first=1, paths=("v3/customers",)),
    )
    with BigCommerceSandbox(orders=20, token=TOKEN, chaos=chaos) as sb:
        with make_client(sb.api_path) as client:
            assert client.get_json("v2/time").json["time"] > 0
            assert client.get_json("v2/store").json["id"] == "sandbox1"
            assert client.get_json("v2/orders/count").json["count"] == 20
            assert len(client.get_json("v2/orders").json) == 20
            assert client.get_json("v3/customers").json["data"]
        assert all(n >= 1 for k, n in sb.counters()["faults"].items() if k != "slow")
    stats = client.stats.as_dict()
    assert stats["transport_errors"] == 1 and stats["malformed_bodies"] == 2
    assert stats["status_counts"]["429"] == 1 and stats["retries"] == 6


def test_read_timeout_is_retried() -> None:
    chaos = Chaos(slow=Fault(first=1), slow_seconds=1.0)
    with (
        BigCommerceSandbox(orders=5, token=TOKEN, chaos=chaos) as sb,
        make_client(sb.api_path, timeout=httpx.Timeout(0.3)) as client,
    ):
        assert client.get_json("v2/time").status == 200
    assert client.stats.as_dict()["transport_errors"] == 1


def test_connection_refused_gives_transport_error() -> None:
    with make_client("http://127.0.0.1:9/") as client, pytest.raises(ApiError) as err:
        client.get_json("v2/time")
    assert err.value.kind == "transport" and err.value.attempts == 4


# --------------------------------------------------------------------------------------------
# Stats, secrets, concurrency
# --------------------------------------------------------------------------------------------


def test_stats_are_counted(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.on("/a", (503, {}, None), (200, {}, {"ok": True}))
    script.on("/b", (200, {}, [1, 2, 3]))
    with make_client(url) as client:
        client.get_json("a")
        client.get_json("b")
        with pytest.raises(ApiError):
            client.get_json("missing")
    stats = client.stats.as_dict()
    assert stats["calls"] == 3 and stats["requests"] == 4 and stats["retries"] == 1
    assert stats["failed_calls"] == 1
    assert stats["status_counts"] == {"200": 2, "404": 1, "503": 1}
    assert stats["bytes_received"] >= len(b'{"ok": true}[1, 2, 3]')
    json.dumps(stats)  # plain JSON for asset metadata


def test_token_never_leaks(
    scripted: tuple[Scripted, str], caplog: pytest.LogCaptureFixture
) -> None:
    script, url = scripted
    echo = {"title": "bad token {token}"}
    script.on("/v2/orders", (503, {}, echo), (401, {}, echo))
    script.on("/v2/store", (200, {}, b"<html>{token}"))
    script.on("/v2/time", (429, {}, echo), (422, {}, echo))
    caplog.set_level(logging.DEBUG)
    errors = []
    with make_client(url) as client:
        for path in ("v2/orders", "v2/store", "v2/time"):
            with pytest.raises(ApiError) as err:
                client.get_json(path)
            errors.append(err.value)
    for e in errors:
        assert TOKEN not in str(e) and TOKEN not in repr(e) and TOKEN not in e.body_excerpt
        assert "***" in e.body_excerpt
    assert TOKEN not in caplog.text
    assert "GET v2/orders" in caplog.text  # retries are logged, with the endpoint
    assert TOKEN not in json.dumps(client.stats.as_dict())


def test_imap_bounded_keeps_order_and_bounds_concurrency() -> None:
    active, peak = [0], [0]
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return i * i

    assert list(imap_bounded(work, range(40), 3)) == [i * i for i in range(40)]
    assert peak[0] <= 3


def test_imap_bounded_reraises_the_first_error() -> None:
    def work(i: int) -> int:
        if i == 5:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        list(imap_bounded(work, range(20), 4))


def test_header_wait_seconds_reads_every_form() -> None:
    assert header_wait_seconds({}) is None
    assert header_wait_seconds({"retry-after": "12"}) == 12
    assert header_wait_seconds({"x-retry-after": "2", "x-rate-limit-time-reset-ms": "4500"}) == 4.5
    from datetime import UTC, datetime

    ref = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    got = header_wait_seconds({"retry-after": "Wed, 01 Jan 2025 12:00:30 GMT"}, now=ref)
    assert got == pytest.approx(30)


def test_api_error_pickles() -> None:
    import pickle

    err = ApiError("GET v2/x: 404", kind="not_found", method="GET", endpoint="v2/x", status=404)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.kind == "not_found" and back.status == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}),
        (b'[{"total": "361.9500"}]', [{"total": "361.9500"}]),
        (b'{"x": NaN}', "nan"),  # orjson refuses it; the stdlib fallback reads it as before
        ('{"name": "Jos\u00e9"}'.encode(), {"name": "Jos\u00e9"}),
    ],
)
def test_json_bodies_parse_as_the_standard_library_would(body: bytes, expected: Any) -> None:
    got = parse_json_body(body)
    if expected == "nan":
        assert math.isnan(got["x"])
    else:
        assert got == expected == json.loads(body)


@pytest.mark.parametrize("body", [b'[{"id": 1}, {"id":', b"<html>busy</html>", b""])
def test_a_body_that_is_not_json_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json_body(body)

"""Microsoft Graph calls a OneDrive drop folder needs: JSON through the shared HTTP layer, and
file content streamed to disk.

JSON calls (folder lookup, delta pages, item lookup) go through `aiq_sync.http.ApiClient`:
429 + Retry-After, 5xx back-off and stats come from there. `ApiClient` buffers whole bodies,
which is right for JSON and wrong for a 1 GB CSV, so `download()` is a small streaming loop
that applies the same `RetryPolicy` and the same Retry-After parsing (`header_wait_seconds`).
It asks `/items/{id}/content` with the bearer token, takes the 302 to the pre-authenticated
URL and follows it WITHOUT the token (that URL carries its own short-lived authorisation and
may live on another host).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from aiq_sync.http import (
    DEFAULT_TIMEOUT,
    ApiClient,
    ApiError,
    NoRateLimit,
    RetryPolicy,
    header_wait_seconds,
)
from connectors.onedrive.auth import AppToken, OneDriveError

logger = logging.getLogger("aiq_sync.onedrive")

CHUNK_BYTES = 1 << 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ItemGone(Exception):
    """The item no longer exists (404 on its content)."""


def _q(segment: str) -> str:
    return quote(segment, safe="")


class GraphClient:
    """One app's Graph session: a token source, a JSON client and a download client."""

    def __init__(
        self,
        base_url: str,
        token: AppToken,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._origin = _origin(httpx.URL(self.base_url))
        self.token = token
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = random.Random()
        # Graph signals limits only reactively (429 + Retry-After): no client-side pacing.
        self.api = ApiClient(
            self.base_url,
            retry=self.retry,
            rate_limiter=NoRateLimit(),
            max_concurrency=1,
            name="graph",
            sleep=sleep,
            clock=clock,
            timeout=timeout,
        )
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)
        self.downloads = {"requests": 0, "files": 0, "bytes": 0, "retries": 0, "throttled_429": 0}
        self.download_wait_s = 0.0
        self._call_wait_s = 0.0  # waited during the current download (its own budget)

    def close(self) -> None:
        self.api.close()
        self._http.close()

    # -- JSON ------------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a Graph resource (a path under the base URL, or a next/delta link)."""
        if httpx.URL(path).is_absolute_url and _origin(httpx.URL(path)) != self._origin:
            # Never send the bearer token anywhere but the configured Graph host.
            raise OneDriveError(
                f"Graph returned a link to another host ({httpx.URL(path).host}); refusing it"
            )
        for attempt in (1, 2):
            token = self.token.token()
            try:
                answer = self.api.request(
                    "GET", path, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except ApiError as exc:
                if exc.status == 401 and attempt == 1:
                    self.token.invalidate(token)  # revoked or expired early: sign in again
                    continue
                raise
            if not isinstance(answer.json, dict):
                raise OneDriveError(f"GET {answer.endpoint}: expected a JSON object")
            return answer.json
        raise AssertionError("unreachable")

    def pages(self, first: str) -> Iterator[dict[str, Any]]:
        """Every page of a listing, following `@odata.nextLink`; the last page holds the
        `@odata.deltaLink` (delta queries) or nothing more (children listings)."""
        url: str | None = first
        while url is not None:
            page = self.get(url)
            yield page
            url = page.get("@odata.nextLink")

    # -- content ---------------------------------------------------------------------------

    def download(self, drive_id: str, item_id: str, dest: Path) -> int:
        """Stream an item's content into `dest` (replaced); returns the bytes written."""
        content = f"{self.base_url}drives/{_q(drive_id)}/items/{_q(item_id)}/content"
        self._call_wait_s = 0.0
        expired = 0
        failures = 0
        while True:
            response = self._send(content, authorised=True)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    response.close()
                    if not location:
                        raise OneDriveError(f"content of item {item_id}: redirect without a URL")
                    response = self._send(location, authorised=False)
                    if response.status_code in (401, 403) and expired < 2:
                        # The pre-authenticated URL lapsed before we used it: ask for a new one.
                        expired += 1
                        response.close()
                        continue
                if response.status_code >= 300:
                    raise OneDriveError(
                        f"download of item {item_id} failed: {response.status_code} "
                        f"{response.reason_phrase}"
                    )
                try:
                    written = self._write(response, dest)
                except (httpx.TransportError, _Truncated) as exc:
                    failures += 1
                    if failures >= self.retry.max_attempts:
                        raise OneDriveError(
                            f"download of item {item_id} kept breaking off "
                            f"({type(exc).__name__}) after {failures} attempts"
                        ) from None
                    self._wait(self.retry.backoff(failures, self._rng), "download broke off")
                    continue
            finally:
                response.close()
            self.downloads["files"] += 1
            self.downloads["bytes"] += written
            return written

    def request_stats(self) -> dict[str, Any]:
        stats = self.api.stats.as_dict()
        stats["downloads"] = {**self.downloads, "wait_seconds": round(self.download_wait_s, 3)}
        stats["token_requests"] = self.token.request_stats().get("requests", 0)
        stats["requests"] = (
            stats.get("requests", 0) + self.downloads["requests"] + stats["token_requests"]
        )
        return stats

    # -- internals -------------------------------------------------------------------------

    def _write(self, response: httpx.Response, dest: Path) -> int:
        expected = response.headers.get("content-length")
        partial = dest.with_name(dest.name + ".part")
        written = 0
        with partial.open("wb") as handle:
            for chunk in response.iter_raw(CHUNK_BYTES):
                handle.write(chunk)
                written += len(chunk)
        if expected is not None and expected.isdigit() and int(expected) != written:
            partial.unlink(missing_ok=True)
            raise _Truncated(f"{written} of {expected} bytes")
        partial.replace(dest)
        return written

    def _send(self, url: str, *, authorised: bool) -> httpx.Response:
        """One hop with retries; returns an open streaming response (2xx, 3xx, or 401/403 of
        a pre-authenticated URL). Raises ItemGone on 404, OneDriveError when it gives up."""
        policy = self.retry
        transient = throttled = 0
        renewed = False
        label = "content" if authorised else f"pre-authenticated URL on {httpx.URL(url).host}"
        while True:
            headers = {}
            token = ""
            if authorised:
                token = self.token.token()
                headers["Authorization"] = f"Bearer {token}"
            self.downloads["requests"] += 1
            try:
                request = self._http.build_request("GET", url, headers=headers)
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                transient += 1
                if transient >= policy.max_attempts:
                    raise OneDriveError(
                        f"download ({label}): {type(exc).__name__} after {transient} attempts"
                    ) from None
                self._wait(policy.backoff(transient, self._rng), type(exc).__name__)
                continue
            status = response.status_code
            if status < 400 or (not authorised and status in (401, 403)):
                return response
            wait = header_wait_seconds(
                {k: response.headers[k] for k in ("retry-after",) if k in response.headers}
            )
            response.close()
            if status == 401 and authorised and not renewed:
                renewed = True
                self.token.invalidate(token)
                continue
            if status == 404:
                raise ItemGone(label)
            if status == 429 and wait is not None:
                throttled += 1
                self.downloads["throttled_429"] += 1
                if throttled > policy.max_rate_limit_retries:
                    raise OneDriveError(f"download ({label}): still throttled (429)")
                self._wait(min(wait, policy.max_header_wait), "429 throttled")
                continue
            if status == 429 or status in policy.retry_statuses:
                transient += 1
                if transient >= policy.max_attempts:
                    raise OneDriveError(f"download ({label}): {status} after {transient} attempts")
                self._wait(
                    min(wait, policy.max_header_wait)
                    if wait is not None
                    else policy.backoff(transient, self._rng),
                    str(status),
                )
                continue
            raise OneDriveError(f"download ({label}): {status} {response.reason_phrase}")

    def _wait(self, seconds: float, why: str) -> None:
        if self._call_wait_s + seconds > self.retry.max_total_wait:
            raise OneDriveError(f"download: giving up, waiting more ({why}) exceeds the budget")
        logger.log(
            logging.WARNING if seconds >= 1 else logging.INFO,
            "graph download: %s; waiting %.2fs",
            why,
            seconds,
        )
        self.downloads["retries"] += 1
        self.download_wait_s += seconds
        self._call_wait_s += seconds
        if seconds > 0:
            self._sleep(seconds)


class _Truncated(Exception):
    pass


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)

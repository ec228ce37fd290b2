"""A local fake of the Microsoft Graph pieces a OneDrive drop folder uses, served on loopback.

- the Entra ID token endpoint, client credentials only:
  ``POST /{tenant}/oauth2/v2.0/token`` (form body; AADSTS-style errors for an unknown tenant,
  client, wrong secret or scope; tokens expire after ``token_lifetime`` seconds);
- one OneDrive for Business drive under ``/v1.0/drives/{drive-id}``: ``root``, items by id or
  path (``root:/Drops/a.csv``), ``children`` (200 a page), and ``root/delta`` with paging
  (``@odata.nextLink`` with ``$skiptoken``) ending in an ``@odata.deltaLink`` whose token
  returns only what changed since; deleted items carry a ``deleted`` facet and no path (like
  the real service, delta answers never fill ``parentReference.path``); parents of changed
  items show up too;
- ``410 Gone`` (``resyncRequired``) for delta links issued before ``expire_delta_links()``,
  or through chaos ``delta_gone``;
- content download: ``GET items/{id}/content`` answers ``302`` to a pre-authenticated URL
  (``/download/{id}?tempauth=...``) valid ``download_url_ttl`` seconds, which needs no token
  (the sandbox counts requests that send one anyway: a client must not leak its token there);
- throttling: a token bucket (``rate`` requests/s) and chaos ``throttle`` answer ``429`` with
  ``Retry-After``; the common chaos modes of ``sandbox.common`` (5xx, resets, slow, truncated
  JSON, HTML 200s) apply to every Graph path.

Uploads (``PUT root:/{path}:/content``) and ``DELETE items/{id}`` work too, and so do the
Python methods ``put_file``/``delete_file``/``rename_file``/``move_file`` used by tests.

    with GraphSandbox() as sb:
        sb.put_file("sales_2026-01-01.csv", b"...")
        sb.graph_base_url   # http://127.0.0.1:PORT/v1.0/
        sb.login_base_url   # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pydantic import Field

from aiq_sync.sandbox.common import Chaos as _ChaosBase
from aiq_sync.sandbox.common import ChaosState, Fault, SandboxHandler, ServerThread, TokenBucket

__all__ = ["Chaos", "Fault", "GraphSandbox", "main"]

logger = logging.getLogger("aiq_sync.sandbox.graph")

GRAPH_PREFIX = "/v1.0/"
DOWNLOAD_PREFIX = "/download/"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PAGE_SIZE = 200
_JSON = "application/json; odata.metadata=minimal; charset=utf-8"
_HTML_BODY = b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1></body></html>"


class Chaos(_ChaosBase):
    """Common faults plus Graph's own: ``delta_gone`` (a delta request with a token answers
    410), ``delta_page_error`` (a delta continuation page answers 500), ``throttle`` (429
    with ``Retry-After: retry_after_seconds``) and ``download_url_expired`` (a
    pre-authenticated URL answers 401)."""

    delta_gone: Fault = Fault()
    delta_page_error: Fault = Fault()
    throttle: Fault = Fault()
    retry_after_seconds: float = Field(1.0, ge=0)
    download_url_expired: Fault = Fault()


@dataclass
class _Item:
    id: str
    name: str
    parent_id: str | None
    is_folder: bool
    created: datetime
    modified: datetime
    seq: int
    content: bytes = b""
    version: int = 1
    content_version: int = 1
    deleted: bool = False

    @property
    def guid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, self.id)).upper()


@dataclass
class _Session:
    """One delta pass: the item ids it serves (fixed when it starts) and its deltaLink seq."""

    ids: list[str]
    snapshot: int
    epoch: int


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _graph_error(status: int, code: str, message: str) -> _Reply:
    return _Reply(
        status,
        {
            "error": {
                "code": code,
                "message": message,
                "innerError": {"date": _iso(datetime.now(UTC)), "request-id": str(uuid.uuid4())},
            }
        },
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GraphSandbox:
    """Local fake tenant with one drive. Context manager; ``start()`` returns the base URL."""

    def __init__(
        self,
        *,
        tenant_id: str = "sandbox-tenant",
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",
        drive_id: str = "b!sandbox-drive",
        folder: str = "Drops",
        token_lifetime: float = 3599.0,
        page_size: int = PAGE_SIZE,
        download_url_ttl: float = 300.0,
        rate: float | None = None,
        burst: int = 20,
        chaos: Chaos | dict[str, Any] | None = None,
        seed: int = 42,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.drive_id = drive_id
        self.folder = folder.strip("/")
        self.token_lifetime = token_lifetime
        self.page_size = page_size
        self.download_url_ttl = download_url_ttl
        self.chaos = chaos if isinstance(chaos, Chaos) else Chaos(**(chaos or {}))
        self._seed = seed
        self._chaos = ChaosState(self.chaos, seed)
        self._bucket = TokenBucket(rate, burst) if rate else None
        self._lock = threading.RLock()
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self._items: dict[str, _Item] = {}
        self._seq = 0
        self._epoch = 0  # expire_delta_links() bumps it: older links answer 410
        self._sessions: dict[str, _Session] = {}
        self._next_id = 0
        self._stats: dict[str, Any] = {}
        self.reset_counters()
        now = datetime.now(UTC)
        self.root_id = self._new_id()
        self._items[self.root_id] = _Item(self.root_id, "root", None, True, now, now, self._bump())
        if self.folder:
            self.ensure_folder(self.folder)
        self._server = ServerThread(self, host, port, "graph-sandbox")
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        port = self._server.start()
        self.base_url = f"http://{self._server.host}:{port}/"
        return self.base_url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> GraphSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def graph_base_url(self) -> str:
        return f"{self.base_url.rstrip('/')}{GRAPH_PREFIX}"

    @property
    def login_base_url(self) -> str:
        return self.base_url

    @property
    def location(self) -> str:
        return f"onedrive://{self.drive_id}/{self.folder}"

    # -- the drive, for tests and the CLI --------------------------------------------------

    def ensure_folder(self, path: str) -> str:
        with self._lock:
            parent = self.root_id
            for part in [p for p in path.strip("/").split("/") if p]:
                child = self._child(parent, part)
                if child is None:
                    now = datetime.now(UTC)
                    child = _Item(self._new_id(), part, parent, True, now, now, self._bump())
                    self._items[child.id] = child
                    self._touch(parent)
                elif not child.is_folder:
                    raise ValueError(f"{part!r} is a file")
                parent = child.id
            return parent

    def put_file(
        self,
        name: str,
        content: bytes,
        *,
        folder: str | None = None,
        modified: datetime | None = None,
    ) -> str:
        """Create or replace a file (same item id, new cTag when replaced); returns its id."""
        with self._lock:
            parent = self.ensure_folder(self.folder if folder is None else folder)
            moment = modified or datetime.now(UTC)
            item = self._child(parent, name)
            if item is None:
                item = _Item(self._new_id(), name, parent, False, moment, moment, self._bump())
                item.content = content
                self._items[item.id] = item
            else:
                if item.is_folder:
                    raise ValueError(f"{name!r} is a folder")
                item.content = content
                item.version += 1
                item.content_version += 1
                item.modified = moment
                item.seq = self._bump()
            self._touch(parent)
            return item.id

    def delete_file(self, name: str, *, folder: str | None = None) -> None:
        with self._lock:
            item = self._require(name, folder)
            item.deleted = True
            item.seq = self._bump()
            self._touch(item.parent_id)

    def rename_file(self, name: str, new_name: str, *, folder: str | None = None) -> None:
        with self._lock:
            item = self._require(name, folder)
            item.name = new_name
            item.version += 1  # eTag changes, cTag (content) does not
            item.seq = self._bump()
            self._touch(item.parent_id)

    def move_file(self, name: str, to_folder: str, *, folder: str | None = None) -> None:
        with self._lock:
            item = self._require(name, folder)
            old_parent = item.parent_id
            item.parent_id = self.ensure_folder(to_folder)
            item.version += 1
            item.seq = self._bump()
            self._touch(old_parent)
            self._touch(item.parent_id)

    def item_id(self, name: str, *, folder: str | None = None) -> str:
        with self._lock:
            return self._require(name, folder).id

    def expire_delta_links(self) -> None:
        """Every delta link (and paging link) issued so far answers 410 Gone from now on."""
        with self._lock:
            self._epoch += 1
            self._sessions.clear()

    def set_chaos(self, chaos: Chaos | dict[str, Any]) -> None:
        """Replace the fault injection (counts start again)."""
        self.chaos = chaos if isinstance(chaos, Chaos) else Chaos(**chaos)
        self._chaos = ChaosState(self.chaos, self._seed)

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self._stats = {
                "requests_total": 0,
                "by_endpoint": {},
                "by_status": {},
                "throttled_429": 0,
                "tokens_issued": 0,
                "token_failures": 0,
                "delta_full": 0,
                "delta_incremental": 0,
                "delta_pages": 0,
                "delta_gone": 0,
                "downloads": 0,
                "download_bytes": 0,
                "download_with_auth_header": 0,
                "download_url_expired": 0,
            }

    def counters(self) -> dict[str, Any]:
        with self._lock:
            snap = json.loads(json.dumps(self._stats))
        with self._chaos.lock:
            snap["faults"] = dict(self._chaos.injected)
        return snap

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, handler: SandboxHandler) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._count("requests_total")
        route = "other"
        try:
            if path.startswith(DOWNLOAD_PREFIX):
                route = "download"
                self._download(handler, path[len(DOWNLOAD_PREFIX) :], query)
                return
            if path.endswith("/oauth2/v2.0/token"):
                route = "token"
                self._throttle_or_fail(handler, "token")
                self._token(handler, path.strip("/").split("/")[0])
                return
            if path.startswith(GRAPH_PREFIX):
                api = unquote(path[len(GRAPH_PREFIX) :])
                route = self._route_name(handler.command, api)
                if self._chaos.hit("connection_reset", api):
                    handler.reset_connection()
                    return
                self._throttle_or_fail(handler, api)
                self._authorise(handler)
                self._graph(handler, api, query, route)
                return
            raise _graph_error(404, "itemNotFound", "The resource could not be found.")
        except _Reply as reply:
            self._reply(handler, reply.status, reply.body, reply.headers, route)

    def _reply(
        self,
        handler: SandboxHandler,
        status: int,
        body: Any,
        headers: dict[str, str] | None,
        route: str,
        *,
        chaos_path: str | None = None,
        content_type: str = _JSON,
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if chaos_path is not None and status == 200:
            if self._chaos.hit("truncated_json", chaos_path):
                raw = raw[: max(1, len(raw) // 2)]
            elif self._chaos.hit("html_200", chaos_path):
                raw, content_type = _HTML_BODY, "text/html; charset=UTF-8"
        self._count("by_status", str(status))
        self._count("by_endpoint", route)
        handler.write_response(status, raw if status != 204 else b"", content_type, headers or {})

    def _throttle_or_fail(self, handler: SandboxHandler, chaos_path: str) -> None:
        if self._chaos.hit("throttle", chaos_path):
            self._count("throttled_429")
            wait = self.chaos.retry_after_seconds
            raise _Reply(
                429,
                {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
                {"Retry-After": _seconds(wait)},
            )
        if self._chaos.hit("throttle_without_headers", chaos_path):
            self._count("throttled_429")
            raise _graph_error(429, "TooManyRequests", "Please retry again later.")
        if self._bucket is not None:
            allowed, wait = self._bucket.take()
            if not allowed:
                self._count("throttled_429")
                raise _Reply(
                    429,
                    {"error": {"code": "activityLimitReached", "message": "Throttled"}},
                    {"Retry-After": _seconds(wait)},
                )
        if self._chaos.hit("server_error", chaos_path):
            statuses = self.chaos.server_error_statuses
            status = statuses[(self._chaos.injected["server_error"] - 1) % len(statuses)]
            raise _graph_error(status, "serviceNotAvailable", "The service is not available.")
        if self._chaos.hit("slow", chaos_path):
            self._server.stopping.wait(self.chaos.slow_seconds)

    # -- token endpoint --------------------------------------------------------------------

    def _token(self, handler: SandboxHandler, tenant: str) -> None:
        if handler.command != "POST":
            raise _Reply(405, {"error": "invalid_request", "error_description": "POST only"})
        form = {k: v[-1] for k, v in parse_qs(handler.body.decode("utf-8", "replace")).items()}

        def fail(status: int, error: str, description: str) -> _Reply:
            with self._lock:
                self._stats["token_failures"] += 1
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            return _Reply(
                status,
                {
                    "error": error,
                    "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}\r\n"
                    f"Timestamp: {stamp}",
                    "error_codes": [int(description[6:].split(":")[0])],
                },
            )

        if unquote(tenant) != self.tenant_id:
            raise fail(
                400,
                "invalid_request",
                f"AADSTS90002: Tenant '{unquote(tenant)[:64]}' not found. Check to make sure "
                "you have the correct tenant ID and are signing into the correct cloud.",
            )
        if form.get("grant_type") != "client_credentials":
            raise fail(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            )
        if form.get("client_id") != self.client_id:
            raise fail(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id', '')[:64]}' "
                "was not found in the directory.",
            )
        if not hmac.compare_digest(form.get("client_secret", ""), self.client_secret):
            # Never echo what was sent.
            raise fail(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                "the request is the client secret value, not the client secret ID.",
            )
        if form.get("scope") != GRAPH_SCOPE:
            raise fail(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource "
                "identifier (application ID URI).",
            )
        token = "eyJ0eXAiOiJKV1QiLCJzYngiOnRydWV9." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
            self._stats["tokens_issued"] += 1
        lifetime = max(1, int(self.token_lifetime))
        raise _Reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
        )

    def _authorise(self, handler: SandboxHandler) -> None:
        header = handler.headers.get("Authorization") or ""
        token = header[7:] if header.startswith("Bearer ") else ""
        if not token:
            raise _graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None or time.monotonic() >= expiry:
            raise _graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )

    # -- Graph routes ----------------------------------------------------------------------

    @staticmethod
    def _route_name(method: str, api: str) -> str:
        if "/root/delta" in api:
            return f"{method} delta"
        if api.endswith("/content") or api.endswith(":/content"):
            return f"{method} content"
        if api.endswith("/children") or api.endswith(":/children"):
            return f"{method} children"
        if ":/" in api or "/root:" in api:
            return f"{method} item by path"
        if "/items/" in api:
            return f"{method} item"
        return f"{method} {api.split('/')[-1] if api.count('/') >= 2 else 'drive'}"

    def _graph(self, handler: SandboxHandler, api: str, query: dict[str, str], route: str) -> None:
        prefix = f"drives/{self.drive_id}"
        if not (api == prefix or api.startswith(prefix + "/")):
            raise _graph_error(404, "itemNotFound", "The resource could not be found.")
        rest = api[len(prefix) :].lstrip("/")
        method = handler.command
        with self._lock:
            if method == "PUT" and rest.startswith("root:/") and rest.endswith(":/content"):
                path = rest[len("root:/") : -len(":/content")]
                folder, _, name = path.rpartition("/")
                item_id = self.put_file(name, handler.body, folder=folder)
                body = self._json(self._items[item_id], with_path=True)
                self._reply(handler, 201, body, None, route)
                return
            if method == "DELETE" and rest.startswith("items/"):
                item = self._by_id(rest[len("items/") :])
                item.deleted = True
                item.seq = self._bump()
                self._touch(item.parent_id)
                self._reply(handler, 204, b"", None, route)
                return
            if method != "GET":
                raise _graph_error(405, "invalidRequest", "Method not allowed.")
            if rest == "":
                body: Any = {"id": self.drive_id, "driveType": "business", "name": "Documents"}
            elif rest == "root/delta":
                body = self._delta(query)
            elif rest == "root":
                body = self._json(self._items[self.root_id], with_path=True)
            elif rest.startswith("root:"):
                path = rest[len("root:") :]
                children = path.endswith(":/children")
                path = path.removesuffix(":/children").rstrip(":")
                item = self._by_path(path)
                body = self._children(item, query) if children else self._json(item, True)
            elif rest.startswith("items/"):
                item_id, _, tail = rest[len("items/") :].partition("/")
                item = self._by_id(item_id)
                if tail == "content":
                    self._redirect_to_content(handler, item, route)
                    return
                if tail == "children":
                    body = self._children(item, query)
                elif tail == "":
                    body = self._json(item, with_path=True)
                else:
                    raise _graph_error(400, "invalidRequest", "Invalid request")
            else:
                raise _graph_error(400, "invalidRequest", "Invalid request")
        self._reply(handler, 200, body, None, route, chaos_path=api)

    def _delta(self, query: dict[str, str]) -> dict[str, Any]:
        skip = query.get("$skiptoken")
        if skip is not None:
            session_id, _, offset_text = skip.rpartition(".")
            session = self._sessions.get(session_id)
            if session is None or session.epoch != self._epoch:
                raise self._gone()
            if self._chaos.hit("delta_page_error", "delta"):
                raise _graph_error(500, "generalException", "An unspecified error occurred.")
            offset = int(offset_text) if offset_text.isdigit() else 0
        else:
            token = query.get("token")
            since, epoch = 0, self._epoch
            if token is not None:
                since, epoch = _read_token(token)
                if epoch != self._epoch or self._chaos.hit("delta_gone", "delta"):
                    raise self._gone()
                self._stats["delta_incremental"] += 1
            else:
                self._stats["delta_full"] += 1
            if since:
                ids = [i.id for i in sorted(self._items.values(), key=lambda i: i.seq)
                       if i.seq > since]  # fmt: skip
            else:  # a full enumeration: what exists now, parents first
                ids = [i.id for i in sorted(self._items.values(), key=lambda i: i.seq)
                       if not i.deleted]  # fmt: skip
            session_id = secrets.token_hex(8)
            session = _Session(ids, self._seq, self._epoch)
            self._sessions[session_id] = session
            offset = 0
        self._stats["delta_pages"] += 1
        page = session.ids[offset : offset + self.page_size]
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_base_url}$metadata#Collection(driveItem)",
            "value": [self._json(self._items[i], with_path=False) for i in page],
        }
        base = f"{self.graph_base_url}drives/{quote(self.drive_id, safe='')}/root/delta"
        if offset + self.page_size < len(session.ids):
            body["@odata.nextLink"] = f"{base}?$skiptoken={session_id}.{offset + self.page_size}"
        else:
            self._sessions.pop(session_id, None)
            body["@odata.deltaLink"] = (
                f"{base}?token={_make_token(session.snapshot, session.epoch)}"
            )
        return body

    def _gone(self) -> _Reply:
        self._stats["delta_gone"] += 1
        return _graph_error(
            410,
            "resyncRequired",
            "Resync required. Replace any local items with the server's version (including "
            "deletes) if you're sure that the service was up to date with your local changes "
            "when you last sync'd. Upload any local changes that the server doesn't know about.",
        )

    def _children(self, folder: _Item, query: dict[str, str]) -> dict[str, Any]:
        if not folder.is_folder:
            raise _graph_error(400, "invalidRequest", "The item is not a folder.")
        kids = sorted(
            (i for i in self._items.values() if i.parent_id == folder.id and not i.deleted),
            key=lambda i: i.name,
        )
        offset = int(query.get("$skiptoken", "0") or 0)
        page = kids[offset : offset + self.page_size]
        body: dict[str, Any] = {"value": [self._json(i, with_path=True) for i in page]}
        if offset + self.page_size < len(kids):
            body["@odata.nextLink"] = (
                f"{self.graph_base_url}drives/{quote(self.drive_id, safe='')}/items/"
                f"{folder.id}/children?$skiptoken={offset + self.page_size}"
            )
        return body

    # -- content ---------------------------------------------------------------------------

    def _redirect_to_content(self, handler: SandboxHandler, item: _Item, route: str) -> None:
        if item.is_folder:
            raise _graph_error(400, "invalidRequest", "Cannot download a folder.")
        self._reply(handler, 302, b"", {"Location": self._download_url(item)}, route)

    def _download_url(self, item: _Item) -> str:
        expires = int((time.time() + self.download_url_ttl) * 1000)  # ms: short test TTLs
        signature = self._sign(f"{item.id}.{expires}")
        return (
            f"{self.base_url.rstrip('/')}{DOWNLOAD_PREFIX}{item.id}?tempauth={expires}.{signature}"
        )

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._signing_key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _download(self, handler: SandboxHandler, item_id: str, query: dict[str, str]) -> None:
        if handler.headers.get("Authorization"):
            with self._lock:
                self._stats["download_with_auth_header"] += 1
        expires_text, _, signature = query.get("tempauth", "").partition(".")
        valid = (
            expires_text.isdigit()
            and hmac.compare_digest(signature, self._sign(f"{item_id}.{expires_text}"))
            and time.time() * 1000 < int(expires_text)
        )
        if not valid or self._chaos.hit("download_url_expired", "download"):
            with self._lock:
                self._stats["download_url_expired"] += 1
            raise _Reply(401, {"error": {"code": "unauthenticated", "message": "Expired"}})
        self._throttle_or_fail(handler, "download")
        with self._lock:
            item = self._items.get(item_id)
            if item is None or item.deleted:
                raise _graph_error(404, "itemNotFound", "The resource could not be found.")
            content = item.content
            self._stats["downloads"] += 1
            self._stats["download_bytes"] += len(content)
        self._reply(
            handler, 200, content, None, "download", content_type="application/octet-stream"
        )

    # -- item helpers ----------------------------------------------------------------------

    def _json(self, item: _Item, with_path: bool) -> dict[str, Any]:
        parent: dict[str, Any] = {"driveId": self.drive_id, "driveType": "business"}
        if item.parent_id is not None:
            parent["id"] = item.parent_id
            if with_path:  # delta answers never carry paths
                parent["path"] = "/drive/root:" + self._path_of(item.parent_id)
        if item.deleted:
            return {"id": item.id, "parentReference": parent, "deleted": {"state": "deleted"}}
        body: dict[str, Any] = {
            "id": item.id,
            "name": item.name,
            "eTag": f'"{{{item.guid}}},{item.version}"',
            "cTag": f'"c:{{{item.guid}}},{item.content_version}"',
            "createdDateTime": _iso(item.created),
            "lastModifiedDateTime": _iso(item.modified),
            "size": len(item.content)
            if not item.is_folder
            else sum(len(i.content) for i in self._items.values() if i.parent_id == item.id),
            "parentReference": parent,
        }
        if item.id == self.root_id:
            body["root"] = {}
            body.pop("parentReference")
        if item.is_folder:
            body["folder"] = {
                "childCount": sum(
                    1 for i in self._items.values() if i.parent_id == item.id and not i.deleted
                )
            }
        else:
            digest = hashlib.sha1(item.content).digest()
            body["file"] = {
                "mimeType": "text/csv" if item.name.lower().endswith(".csv") else "text/plain",
                "hashes": {"quickXorHash": base64.b64encode(digest[:20]).decode()},
            }
            if with_path:
                body["@microsoft.graph.downloadUrl"] = self._download_url(item)
        return body

    def _path_of(self, item_id: str) -> str:
        parts: list[str] = []
        node = self._items.get(item_id)
        while node is not None and node.id != self.root_id:
            parts.append(node.name)
            node = self._items.get(node.parent_id or "")
        return "/" + "/".join(reversed(parts)) if parts else ""

    def _child(self, parent_id: str, name: str) -> _Item | None:
        # OneDrive names are case-insensitive within a folder.
        for item in self._items.values():
            if (
                item.parent_id == parent_id
                and not item.deleted
                and item.name.lower() == name.lower()
            ):
                return item
        return None

    def _by_path(self, path: str) -> _Item:
        node = self._items[self.root_id]
        for part in [p for p in path.strip("/").split("/") if p]:
            child = self._child(node.id, part)
            if child is None:
                raise _graph_error(404, "itemNotFound", "The resource could not be found.")
            node = child
        return node

    def _by_id(self, item_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None or item.deleted:
            raise _graph_error(404, "itemNotFound", "The resource could not be found.")
        return item

    def _require(self, name: str, folder: str | None) -> _Item:
        path = f"{self.folder if folder is None else folder}/{name}"
        try:
            return self._by_path(path)
        except _Reply:
            raise KeyError(f"no file {path!r} in the sandbox drive") from None

    def _touch(self, folder_id: str | None) -> None:
        # Like OneDrive: a change inside a folder changes the folder (and it shows in delta).
        if folder_id is not None and folder_id in self._items:
            folder = self._items[folder_id]
            folder.modified = datetime.now(UTC)
            folder.version += 1
            folder.seq = self._bump()

    def _bump(self) -> int:
        self._seq += 1
        return self._seq

    def _new_id(self) -> str:
        self._next_id += 1
        digest = hashlib.sha1(f"{self.drive_id}:{self._next_id}".encode()).digest()
        return "01" + base64.b32encode(digest).decode()[:32]

    def _count(self, key: str, sub: str | None = None) -> None:
        with self._lock:
            if sub is None:
                self._stats[key] += 1
            else:
                self._stats[key][sub] = self._stats[key].get(sub, 0) + 1


def _seconds(value: float) -> str:
    """Whole seconds as Graph sends them; fractions only for sub-second (test) waits."""
    return str(int(value)) if value >= 1 and float(value).is_integer() else f"{value:.3f}"


def _make_token(seq: int, epoch: int) -> str:
    raw = json.dumps({"s": seq, "e": epoch}, separators=(",", ":")).encode()
    return "aTE0" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str) -> tuple[int, int]:
    try:
        raw = token.removeprefix("aTE0")
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return int(data["s"]), int(data["e"])
    except (ValueError, KeyError, TypeError):
        return 0, -1  # unreadable: treated as expired (410), like a foreign token


def sync_folder(sandbox: GraphSandbox, local: Path, seen: dict[str, tuple[int, int]]) -> int:
    """Mirror the files of a local folder into the sandbox's drop folder (new, changed and
    deleted files); `seen` carries (size, mtime_ns) between calls. Returns changes made."""
    changes = 0
    current: dict[str, tuple[int, int]] = {}
    for path in sorted(local.iterdir()) if local.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            current[path.name] = (stat.st_size, stat.st_mtime_ns)
            if seen.get(path.name) != current[path.name]:
                modified = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)
                sandbox.put_file(path.name, path.read_bytes(), modified=modified)
                changes += 1
    for name in set(seen) - set(current):
        try:
            sandbox.delete_file(name)
            changes += 1
        except KeyError:
            pass
    seen.clear()
    seen.update(current)
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aiq_sync.sandbox.graph",
        description="Serve a fake Microsoft Graph (token endpoint + one OneDrive drive) on "
        "loopback until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8767, help="0 picks a free port")
    parser.add_argument("--tenant-id", default="sandbox-tenant")
    parser.add_argument("--client-id", default="sandbox-client")
    parser.add_argument("--client-secret", default="sandbox-secret")
    parser.add_argument("--drive-id", default="b!sandbox-drive")
    parser.add_argument("--folder", default="Drops", help="the drop folder in the drive")
    parser.add_argument("--from-folder", type=Path, help="upload this local folder's files")
    parser.add_argument(
        "--watch", action="store_true", help="keep mirroring --from-folder (every 2 s)"
    )
    parser.add_argument("--token-lifetime", type=float, default=3599.0)
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: no limit")
    parser.add_argument(
        "--chaos", default="", help="e.g. throttle=0.05,delta_gone=1,server_error=0.02"
    )
    args = parser.parse_args(argv)
    sandbox = GraphSandbox(
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        drive_id=args.drive_id,
        folder=args.folder,
        token_lifetime=args.token_lifetime,
        page_size=args.page_size,
        rate=args.rate or None,
        chaos=Chaos.parse(args.chaos),
        host=args.host,
        port=args.port,
    )
    seen: dict[str, tuple[int, int]] = {}
    if args.from_folder:
        sync_folder(sandbox, args.from_folder, seen)
    sandbox.start()
    print(f"Graph sandbox serving at {sandbox.graph_base_url} (token: {sandbox.login_base_url})")
    print(
        "config:\n"
        f"  - {{name: onedrive, type: file_drop, location: '{sandbox.location}',\n"
        "     tenant_id_env: OD_TENANT_ID, client_id_env: OD_CLIENT_ID, "
        "client_secret_env: OD_CLIENT_SECRET,\n"
        f"     graph_base_url: '{sandbox.graph_base_url}', "
        f"login_base_url: '{sandbox.login_base_url}'}}\n"
        f"env: OD_TENANT_ID={args.tenant_id} OD_CLIENT_ID={args.client_id} "
        f"OD_CLIENT_SECRET=<--client-secret>    (Ctrl-C to stop)",
        flush=True,
    )
    try:
        while True:
            time.sleep(2 if args.watch else 3600)
            if args.watch and args.from_folder:
                changed = sync_folder(sandbox, args.from_folder, seen)
                if changed:
                    print(f"mirrored {changed} change(s) from {args.from_folder}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        print(json.dumps(sandbox.counters(), indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

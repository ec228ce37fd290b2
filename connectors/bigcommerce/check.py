"""`aiq-sync check` for a BigCommerce source: can the token read what a sync needs?

`GET /v2/store` first (token, store hash, time zone), then one cheap request per entity
(`limit=1`). Each missing scope is one problem line naming `sources[<name>]` and the scope;
the token itself is never shown. Contact sync needs Customers Write: checked with
`POST /v3/customers` and an empty array, which the spec allows and which creates nothing (a
token without the scope gets 403 before the body is looked at). A frozen source is not
checked at all: freeze means no request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from aiq_sync.config import BigCommerceSource
from aiq_sync.http import ApiClient, ApiError, RetryPolicy
from connectors.bigcommerce import client as bc
from connectors.bigcommerce.models import Store

# A check answers in seconds or says why not; the sync's patient retry budget does not apply.
CHECK_RETRY = RetryPolicy(max_attempts=3, max_rate_limit_retries=3, max_total_wait=30.0)

# (method, path, params or body, scope, what a sync needs it for)
PROBES: tuple[tuple[str, str, Any, str, str], ...] = (
    ("GET", "v3/customers", {"limit": 1}, bc.SCOPE_CUSTOMERS_READ, "customers"),
    ("GET", "v2/orders", {"limit": 1}, bc.SCOPE_ORDERS, "orders"),
    ("GET", "v3/catalog/products", {"limit": 1}, bc.SCOPE_PRODUCTS, "products"),
    ("GET", "v3/inventory/items", {"limit": 1}, bc.SCOPE_INVENTORY, "inventory"),
    ("GET", "v3/inventory/locations", {"limit": 1}, bc.SCOPE_LOCATIONS, "store locations"),
)
WRITE_PROBE = ("POST", "v3/customers", [], bc.SCOPE_CUSTOMERS_WRITE, "contact sync")


def _missing(source: BigCommerceSource, scope: str, needed_for: str) -> str:
    return (
        f"sources[{source.name}]: the access token lacks the '{scope}' scope (needed for "
        f"{needed_for}); add it to the store's API account and use the new token"
    )


def check(
    source: BigCommerceSource,
    *,
    timezone: str | None = None,
    env: Mapping[str, str] | None = None,
    **client_options: Any,
) -> list[str]:
    """Problems that stop a sync of `source`, one line each (empty: ready).

    `timezone` is the zone the source is synced in (config.source_timezone); a store that
    says otherwise in `/v2/store` is a problem: partition days and rule dates would be off.
    """
    if source.freeze:
        return []
    name = f"sources[{source.name}]"
    try:
        client = bc.open_client(
            source, env=env, retry=client_options.pop("retry", CHECK_RETRY), **client_options
        )
    except bc.MissingToken as exc:
        return [str(exc)]
    problems: list[str] = []
    with client:
        try:
            store_body = client.get_json("v2/store").json
        except ApiError as exc:
            if exc.status == 401:
                return [
                    f"{name}.access_token_env: BigCommerce rejected the token in "
                    f"{source.access_token_env} (401 Unauthorized): it is wrong or revoked"
                ]
            if exc.status == 404:
                return [
                    f"{name}.api_path: BigCommerce has no store {source.store_hash!r} "
                    "(404 Not Found): check the store hash in the API Path"
                ]
            if exc.status != 403:
                return [f"{name}: BigCommerce cannot be reached: {exc}"]
            problems.append(_missing(source, bc.SCOPE_INFORMATION, "the store's time zone"))
            store_body = None
        if store_body is not None:
            problems += _store_problems(source, store_body, timezone or source.timezone)
        probes = PROBES + ((WRITE_PROBE,) if source.sync_contacts else ())
        for method, path, payload, scope, needed_for in probes:
            problem = _probe(client, source, method, path, payload, scope, needed_for)
            if problem:
                problems.append(problem)
    return problems


def _probe(
    client: ApiClient,
    source: BigCommerceSource,
    method: str,
    path: str,
    payload: Any,
    scope: str,
    needed_for: str,
) -> str | None:
    try:
        if method == "GET":
            client.get_json(path, payload, scope=scope)
        else:
            client.post_json(path, payload, scope=scope)
    except ApiError as exc:
        if exc.status in (401, 403):
            return _missing(source, scope, needed_for)
        if method == "POST" and exc.status == 422:
            return None  # authorised; the empty body was merely refused
        return f"sources[{source.name}]: {needed_for}: {exc}"
    return None


def _store_problems(source: BigCommerceSource, body: Any, timezone: str | None) -> list[str]:
    try:
        store = Store.model_validate(body)
    except ValidationError as exc:
        return [f"sources[{source.name}]: GET /v2/store answered an unexpected body: {exc}"]
    store_tz = store.timezone.name if store.timezone else None
    if store_tz and timezone and store_tz != timezone:
        return [
            f"sources[{source.name}].timezone: the store's time zone is {store_tz} (GET "
            f"/v2/store) but the source is synced in {timezone}; set timezone: {store_tz} "
            "so days and rule dates match the store's"
        ]
    return []

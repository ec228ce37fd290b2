"""The BigCommerce HTTP client: auth header, scopes, quota pacing, retries.

One `ApiClient` per opened source. The token is read from the environment only here, at run
time, and handed to httpx as a header; `ApiClient` scrubs it from every error and log line.
Pacing follows the store-wide quota headers; the limiter is shared by every client of the same
store in this process, so a second entity extracted right after the first starts from what
the server last said instead of sending blind requests into an exhausted window.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from aiq_sync.config import BigCommerceSource
from aiq_sync.http import ApiClient, HeaderQuotaRateLimiter, RetryPolicy

# Scope names as the merchant sees them when creating the store API account.
SCOPE_INFORMATION = "Information & Settings Read"
SCOPE_ORDERS = "Orders Read"
SCOPE_CUSTOMERS_READ = "Customers Read"
SCOPE_CUSTOMERS_WRITE = "Customers Write"
SCOPE_PRODUCTS = "Products Read"
SCOPE_INVENTORY = "Store Inventory Read"
SCOPE_LOCATIONS = "Store Locations Read"

# API path prefix (relative to the store root) -> scope it needs, for 401/403 messages.
SCOPES: dict[str, str] = {
    "v2/store": SCOPE_INFORMATION,
    "v2/orders": SCOPE_ORDERS,
    "GET v3/customers": SCOPE_CUSTOMERS_READ,
    "POST v3/customers": SCOPE_CUSTOMERS_WRITE,
    "v3/catalog": SCOPE_PRODUCTS,
    "v3/inventory/items": SCOPE_INVENTORY,
    "v3/inventory/locations": SCOPE_LOCATIONS,
}

PAGE_LIMIT = 250  # the maximum every list endpoint we use accepts (above: 413)

_LIMITERS: dict[str, HeaderQuotaRateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


class MissingToken(Exception):
    """The access token's environment variable is not set (the message names the variable)."""


def shared_limiter(source: BigCommerceSource) -> HeaderQuotaRateLimiter:
    """The process-wide limiter of this store: the quota is per store, not per client."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(source.store_root)
        if limiter is None:
            limiter = _LIMITERS[source.store_root] = HeaderQuotaRateLimiter()
        return limiter


def access_token(source: BigCommerceSource, env: Mapping[str, str] | None = None) -> str:
    environ = os.environ if env is None else env
    token = environ.get(source.access_token_env)
    if not token:
        raise MissingToken(
            f"sources[{source.name}].access_token_env: environment variable "
            f"{source.access_token_env} is not set"
        )
    return token


def open_client(
    source: BigCommerceSource,
    *,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
    **options: Any,
) -> ApiClient:
    """An `ApiClient` rooted at the store (`.../stores/<hash>/`); v2 and v3 paths hang off it."""
    token = access_token(source, env)
    return ApiClient(
        source.store_root,
        headers={"X-Auth-Token": token, "Accept": "application/json"},
        secret_values=[token],
        retry=retry,
        rate_limiter=shared_limiter(source),
        max_concurrency=source.max_concurrency,
        scopes=SCOPES,
        name=f"bigcommerce[{source.name}]",
        transport=transport,
        **options,
    )

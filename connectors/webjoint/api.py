"""Everything about the Webjoint API that is reconstructed rather than read in its docs.

Webjoint publishes docs (public-docs.webjoint.com, a Postman collection) that could not be read
when this connector was written; the shape below comes from public client code and is
UNCERTAIN. Every guess lives here, numbered A1..A12 like the checklist in docs/webjoint.md, so
it can be corrected from the vendor docs without touching the rest of the connector (paging,
windows, de-duplication and mapping only use these names). The sandbox
(`aiq_sync.sandbox.webjoint`) implements exactly these assumptions.
"""

from __future__ import annotations

from datetime import UTC, date, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from aiq_sync.extract import Window

# A1. Auth: the merchant's API key in a request header. Third-party clients send `x-api-key`;
# some send the user's id token as `Authorization`. Header names matching key/auth/token are
# scrubbed from every error text by aiq_sync.http and filtered from test cassettes.
AUTH_HEADER = "x-api-key"


def auth_headers(api_key: str) -> dict[str, str]:
    return {AUTH_HEADER: api_key, "Accept": "application/json"}


# A2. The CompanyID the merchant gives is sent as a query parameter on every call.
COMPANY_PARAM = "companyId"
FACILITY_PARAM = "facilityId"

# A3. Listing endpoints, relative to the base URL (config `base_url`).
DEFAULT_BASE_URL = "https://app.webjoint.com/prod/api/"
FACILITIES = "facilities"  # the company's facilities (stores)
ORDERS = "orders"  # per facility, date filtered, line items embedded in `details`
CUSTOMERS = "customers"  # company-wide, filtered by last update
PRODUCTS = "products"  # per facility, with `variant[]`
PACKAGES = "packages"  # per facility: stock per room (`packageQuantities[]`)

# A4. Paging: `range=[start,end]` (inclusive, JSON array syntax), 100 rows a page, until an
# EMPTY page (a short page is not proof of the end). The body is a bare JSON array.
PAGE_SIZE = 100
RANGE_PARAM = "range"


def range_value(start: int, size: int = PAGE_SIZE) -> str:
    return f"[{start},{start + size - 1}]"


def rows_of(body: Any) -> list[dict[str, Any]] | None:
    """The rows of one listing answer; None when the body is not a listing at all."""
    if body is None:
        return []
    if isinstance(body, dict):  # tolerate an envelope in case the docs say so
        for key in ("data", "items", "results", "rows"):
            if isinstance(body.get(key), list):
                body = body[key]
                break
        else:
            return None
    if not isinstance(body, list):
        return None
    return [row for row in body if isinstance(row, dict)]


# A5. Date filter on `orders` and `customers`: `dateFrom` / `dateTo`, calendar days
# (YYYY-MM-DD), both inclusive. It is LOOSE: rows from before `dateFrom` come back and rows
# repeat; the connector keeps only rows inside the window and de-duplicates by id.
DATE_FROM_PARAM = "dateFrom"
DATE_TO_PARAM = "dateTo"
DATE_FORMAT = "%Y-%m-%d"
# Whether the server reads those days in UTC or in the facility's zone is unknown, so the
# request covers the window under both readings ("both"); set "utc" or "local" once known
# (about half the rows of a one-day window are then never sent).
DATE_PARAM_ZONE = "both"


def date_params(window: Window, timezone: str | None) -> dict[str, str]:
    """Query parameters covering [window.start, window.end) whatever zone the server uses."""
    last = window.end - timedelta(microseconds=1)
    zones: list[tzinfo] = []
    if DATE_PARAM_ZONE in ("utc", "both") or not timezone:
        zones.append(UTC)
    if DATE_PARAM_ZONE in ("local", "both") and timezone:
        zones.append(ZoneInfo(timezone))
    first_day: date = min(window.start.astimezone(z).date() for z in zones)
    last_day: date = max(last.astimezone(z).date() for z in zones)
    return {
        DATE_FROM_PARAM: first_day.strftime(DATE_FORMAT),
        DATE_TO_PARAM: last_day.strftime(DATE_FORMAT),
    }


# A6. Field names in the bodies. The first one present wins; models.py reads these.
ID_FIELDS = ("id",)
# The time the date filter looks at, and that orders the versions of a record: its last
# change. If the vendor filters on creation instead, put `dateCreated` first here and raise
# `lookback_days` so late refunds and status changes are re-read.
ORDER_UPDATED_FIELDS = ("dateUpdated", "updatedAt", "lastModified", "dateModified")
ORDER_CREATED_FIELDS = ("dateCreated", "createdAt", "date", "orderDate")
ORDER_COMPLETED_FIELDS = ("dateCompleted", "completedAt", "completedDate")
CUSTOMER_UPDATED_FIELDS = ("dateUpdated", "updatedAt", "lastModified", "dateModified")
CUSTOMER_CREATED_FIELDS = ("dateCreated", "createdAt")
ORDER_TYPE_FIELDS = ("orderType", "type")
# A return's link to the order it refunds.
ORIGINAL_ORDER_FIELDS = ("originalOrderId", "refundedOrderId", "returnOrderId", "parentOrderId")
REFUND_AMOUNT_FIELDS = ("refundAmount", "refundedAmount", "amountRefunded")
TAX_FIELDS = ("taxes", "tax", "totalTax")  # a number, or a list of {name, amount}
PHONE_FIELDS = ("phone", "phoneNumber", "mobilePhone", "cellPhone")
BIRTH_FIELDS = ("birthDate", "dateOfBirth", "dob", "birthday")
VARIANT_FIELDS = ("variant", "variants")

# A7. Statuses. Only `Complete` orders are sales. An order whose status later becomes one of
# REFUNDED_STATUSES was a sale and has been refunded (a refund row is derived from it); a
# RETURN order type is a refund of the order named in ORIGINAL_ORDER_FIELDS.
COMPLETE = "Complete"
REFUNDED_STATUSES = frozenset({"Refunded", "Returned", "Partially Refunded"})
RETURN_ORDER_TYPES = frozenset({"Return", "Refund"})
CURRENCY = "USD"

# A8. Timestamps are ISO-8601 (`2025-03-10T18:22:05.000Z`); one without an offset is UTC.
# A9. Money is a JSON number or numeric string in dollars; quantities may be fractional.
# A10. Order ids are unique within the company (the older composite form
# `{companyId}-{facilityId}-{customerId}-{orderId}` is unique too); customer ids likewise.
# A11. `variant[].productId` identifies the sellable item; packages and order `details` point
# at it with `productId`. The sku falls back to it.

# A12. No published rate limit: pace like comparable POS APIs (Treez: 10 requests/s per
# location), back off on 429 (Retry-After honoured when sent).
REQUESTS_PER_SECOND = 5.0
BURST = 5

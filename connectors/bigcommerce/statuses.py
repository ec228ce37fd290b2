"""BigCommerce order statuses (v2 `status_id` 0-14) -> canonical `core.sales.status`.

A *completed* sale (`status = 'completed' AND NOT is_refund`) is one the shopper paid for: it
counts in gross sales and earns loyalty points. Money that went back to the shopper is never
expressed by changing the sale's status; it is a separate refund row (`is_refund = true,
status = 'refund', refunded_sale_id = <order id>, total = -<refunded amount>`), so gross sales
keep the sale, net sales and points net the refund out, and loyalty can reverse exactly what
the refund is worth (see normalise.py and docs/bigcommerce.md).

A completed order gets a refund row whenever it carries a refunded amount. The spec says
`refunded_amount` may read 0, so a Refunded (4) order without one is taken as refunded in full
and a Partially Refunded (14) one as the sum of its refunded line items. Orders that are not
completed never get a refund row: nothing was counted that a refund could net out.
"""

from __future__ import annotations

COMPLETED = "completed"
PENDING = "pending"
CANCELLED = "cancelled"
DECLINED = "declined"
DISPUTED = "disputed"
DELETED = "deleted"
REFUND = "refund"  # the separate refund row

# How to size a refund when `refunded_amount` is 0.
FULL, ITEMS = "total_inc_tax", "refunded line items"

# status_id -> (BigCommerce name, canonical status, refund size when refunded_amount is 0)
STATUS_MAP: dict[int, tuple[str, str, str | None]] = {
    0: ("Incomplete", PENDING, None),  # abandoned at the payment page; never paid
    1: ("Pending", PENDING, None),
    2: ("Shipped", COMPLETED, None),
    3: ("Partially Shipped", COMPLETED, None),
    4: ("Refunded", COMPLETED, FULL),  # the sale happened; the full refund is its own row
    5: ("Cancelled", CANCELLED, None),
    6: ("Declined", DECLINED, None),
    7: ("Awaiting Payment", PENDING, None),
    8: ("Awaiting Pickup", COMPLETED, None),
    9: ("Awaiting Shipment", COMPLETED, None),
    10: ("Completed", COMPLETED, None),
    11: ("Awaiting Fulfillment", COMPLETED, None),  # paid, not yet packed
    12: ("Manual Verification Required", PENDING, None),
    13: ("Disputed", DISPUTED, None),
    14: ("Partially Refunded", COMPLETED, ITEMS),
}
# Any status with `is_deleted: true` (archived in the control panel) becomes `deleted`.


def canonical_status(status_id: int, is_deleted: bool) -> str:
    if is_deleted:
        return DELETED
    return STATUS_MAP[status_id][1]


def refund_fallback(status_id: int) -> str | None:
    return STATUS_MAP[status_id][2]

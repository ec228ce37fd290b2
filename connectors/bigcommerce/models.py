"""Pydantic models of the BigCommerce payloads we read (official OpenAPI specs, see docs).

Every model allows extra fields: BigCommerce adds fields often and a new one must never break a
sync. Only the fields the normalisers use are declared, with the types the specs give:
- v2 (orders, store) dates are RFC-2822 (`Wed, 10 Jan 2018 21:05:30 +0000`), parsed into aware
  datetimes; `date_shipped` is `""` when unset. Dates are never compared as strings;
- v2 money is a string with 4 decimals (`"361.9500"`), v3 money a JSON number; both become
  `Decimal` (payloads are parsed with `parse_float=Decimal`, so no float ever rounds them);
- v3 dates are ISO-8601 (`2018-08-15T14:49:05Z`, catalog: `...+00:00`).
"""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

from aiq_sync.normalise import check_amount

# ------------------------------------------------------------------------------ field types


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
                                         "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_WEEKDAYS = {"Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"}
_OFFSETS: dict[str, timezone] = {"+0000": UTC}


def _fast_rfc2822(value: str) -> datetime | None:
    """The exact shape BigCommerce sends (`Wed, 10 Jan 2018 21:05:30 +0000`) in ~1 us
    instead of email.utils' ~3 us (two per order); None for anything else, which then goes
    through email.utils (two-digit years, named zones, `-0000`...)."""
    parts = value.split(" ")
    if len(parts) != 6 or parts[0] not in _WEEKDAYS or (month := _MONTHS.get(parts[2])) is None:
        return None
    day, year, clock, offset = parts[1], parts[3], parts[4], parts[5]
    if not (len(year) == 4 and len(clock) == 8 and len(offset) == 5 and offset[0] in "+-"):
        return None
    if offset == "-0000" or not (day + year + offset[1:]).isdigit():
        return None
    hour, minute, second = clock[0:2], clock[3:5], clock[6:8]
    if clock[2] != ":" or clock[5] != ":" or not (hour + minute + second).isdigit():
        return None
    try:
        zone = _OFFSETS.get(offset)
        if zone is None:
            delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))
            zone = _OFFSETS.setdefault(offset, timezone(-delta if offset[0] == "-" else delta))
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second), 0, zone)
    except ValueError:
        return None  # e.g. 31 Feb or +2400: email.utils words the error


def parse_rfc2822(value: Any) -> datetime:
    """`Wed, 10 Jan 2018 21:05:30 +0000` -> aware datetime (naive input taken as UTC)."""
    if isinstance(value, str) and (fast := _fast_rfc2822(value)) is not None:
        return fast
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{value!r} is not an RFC-2822 date") from None
    else:
        raise ValueError(f"{value!r} is not an RFC-2822 date")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rfc2822_or_none(value: Any) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_rfc2822(value)


def _money(value: Any) -> Decimal | None:
    # Strings first: v2 money ("361.9500") is ~1.2M calls per 50k orders.
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not an amount") from None
    elif value is None:
        return None
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        amount = Decimal(str(value))
    else:
        raise ValueError(f"{value!r} is not an amount")
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    return check_amount(amount, value)


Rfc2822 = Annotated[datetime, BeforeValidator(parse_rfc2822)]
OptionalRfc2822 = Annotated[datetime | None, BeforeValidator(_rfc2822_or_none)]
Money = Annotated[Decimal | None, BeforeValidator(_money)]
Quantity = Annotated[Decimal, AfterValidator(check_amount)]


def loads(text: str) -> Any:
    """Parse a landed payload; JSON numbers with a fraction become Decimal, not float."""
    return json.loads(text, parse_float=Decimal)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ResourceLink(_Model):
    """`{"url": ..., "resource": ...}`: a sub-resource the API did not embed."""

    url: str | None = None
    resource: str | None = None


# ------------------------------------------------------------------------------ orders (v2)


class AppliedDiscount(_Model):
    id: str | int | None = None
    amount: Money = None
    name: str | None = None
    code: str | None = None
    target: str | None = None


class OrderProduct(_Model):
    """orderProducts: one line item (`/v2/orders/{id}/products`, or embedded in consignments)."""

    id: int
    order_id: int | None = None
    product_id: int | None = None
    variant_id: int | None = None
    name: str | None = None
    name_customer: str | None = None
    sku: str | None = None
    type: str | None = None
    brand: str | None = None
    quantity: Quantity
    price_ex_tax: Money = None
    total_ex_tax: Money = None
    total_inc_tax: Money = None
    total_tax: Money = None
    applied_discounts: list[AppliedDiscount] = Field(default_factory=list)
    is_refunded: bool | None = None
    quantity_refunded: Quantity | None = None
    refund_amount: Money = None


def _item_or_link(value: Any) -> str:
    if isinstance(value, OrderProduct):
        return "item"
    if isinstance(value, dict) and ("quantity" in value or "product_id" in value):
        return "item"
    return "link"


LineItem = Annotated[
    Annotated[OrderProduct, Tag("item")] | Annotated[ResourceLink, Tag("link")],
    Discriminator(_item_or_link),
]
# Embedded line items are a list; a digital or gift certificate consignment may carry a link.
LineItems = list[LineItem] | ResourceLink | None


class PickupLocation(_Model):
    id: int
    name: str | None = None
    code: str | None = None


class PickupConsignment(_Model):
    id: int | None = None
    location: PickupLocation | None = None
    line_items: LineItems = None


class ShippingConsignment(_Model):
    id: int | None = None
    line_items: LineItems = None


class OtherConsignment(_Model):
    """Digital downloads and gift certificate e-mails."""

    line_items: LineItems = None


class EmailConsignments(_Model):
    gift_certificates: list[OtherConsignment] = Field(default_factory=list)


class Consignments(_Model):
    """orderConsignment_Get (`include=consignments.line_items&consignment_structure=object`)."""

    pickups: list[PickupConsignment] = Field(default_factory=list)
    shipping: list[ShippingConsignment] = Field(default_factory=list)
    downloads: list[OtherConsignment] = Field(default_factory=list)
    email: EmailConsignments | None = None

    def all(self) -> list[PickupConsignment | ShippingConsignment | OtherConsignment]:
        gifts = self.email.gift_certificates if self.email else []
        return [*self.pickups, *self.shipping, *self.downloads, *gifts]


class BillingAddress(_Model):
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    street_1: str | None = None
    street_2: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    country_iso2: str | None = None
    phone: str | None = None
    email: str | None = None


def _consignments_or_link(value: Any) -> str:
    if isinstance(value, dict) and ("url" in value or "resource" in value):
        return "link"
    return "object"


class Order(_Model):
    """order_Resp (v2)."""

    id: int
    customer_id: int = 0
    date_created: Rfc2822
    date_modified: Rfc2822
    date_shipped: OptionalRfc2822 = None
    status_id: int
    status: str | None = None
    subtotal_ex_tax: Money = None
    subtotal_inc_tax: Money = None
    total_ex_tax: Money = None
    total_inc_tax: Money
    total_tax: Money = None
    discount_amount: Money = None
    coupon_discount: Money = None
    refunded_amount: Money = None
    items_total: Decimal | None = None
    currency_code: str | None = None
    default_currency_code: str | None = None
    is_deleted: bool = False
    order_source: str | None = None
    billing_address: BillingAddress | None = None
    consignments: (
        Annotated[
            Annotated[Consignments, Tag("object")] | Annotated[ResourceLink, Tag("link")],
            Discriminator(_consignments_or_link),
        ]
        | None
    ) = None
    # Added by our extractor when the embedded line items were incomplete (see extract.py).
    fetched_line_items: list[OrderProduct] | None = Field(default=None, alias="_line_items")

    def embedded_line_items(self) -> list[OrderProduct]:
        if not isinstance(self.consignments, Consignments):
            return []
        found: dict[int, OrderProduct] = {}
        for consignment in self.consignments.all():
            if isinstance(consignment.line_items, list):
                for item in consignment.line_items:
                    if isinstance(item, OrderProduct):
                        found.setdefault(item.id, item)
        return list(found.values())

    def line_items(self) -> list[OrderProduct]:
        items = (
            self.fetched_line_items
            if self.fetched_line_items is not None
            else self.embedded_line_items()
        )
        return sorted(items, key=lambda item: item.id)

    def pickup_location(self) -> PickupLocation | None:
        if isinstance(self.consignments, Consignments):
            for pickup in self.consignments.pickups:
                if pickup.location is not None:
                    return pickup.location
        return None

    def fulfilment(self) -> str | None:
        """pickup | shipping | digital | gift_certificate, from the consignments."""
        if not isinstance(self.consignments, Consignments):
            return None
        c = self.consignments
        if c.pickups:
            return "pickup"
        if c.shipping:
            return "shipping"
        if c.downloads:
            return "digital"
        if c.email and c.email.gift_certificates:
            return "gift_certificate"
        return None


# --------------------------------------------------------------------------- customers (v3)


class CustomerAddress(_Model):
    id: int | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    state_or_province: str | None = None
    postal_code: str | None = None
    country_code: str | None = None
    country: str | None = None
    phone: str | None = None


class Customer(_Model):
    """customer_Full (v3)."""

    id: int
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    phone: str | None = None
    date_created: datetime | None = None
    date_modified: datetime
    addresses: list[CustomerAddress] = Field(default_factory=list)


# ----------------------------------------------------------------------------- catalog (v3)


class OptionValue(_Model):
    id: int | None = None
    label: str | None = None
    option_display_name: str | None = None


class Variant(_Model):
    id: int
    product_id: int | None = None
    sku: str | None = None
    price: Money = None
    calculated_price: Money = None
    sale_price: Money = None
    cost_price: Money = None
    image_url: str | None = None
    inventory_level: Decimal | None = None
    option_values: list[OptionValue] = Field(default_factory=list)


class Product(_Model):
    id: int
    name: str
    sku: str | None = None
    type: str | None = None
    price: Money = None
    calculated_price: Money = None
    brand_id: int | None = None
    categories: list[int] = Field(default_factory=list)
    is_visible: bool | None = None
    date_modified: datetime
    base_variant_id: int | None = None
    variants: list[Variant] = Field(default_factory=list)


# -------------------------------------------------------------------- inventory and locations


class InventoryIdentity(_Model):
    sku: str | None = None
    variant_id: int
    product_id: int
    sku_id: int | None = None


class InventoryLevel(_Model):
    location_id: int
    location_code: str | None = None
    location_name: str | None = None
    available_to_sell: Decimal | None = None
    total_inventory_onhand: Decimal | None = None
    location_enabled: bool | None = None


class InventoryItem(_Model):
    identity: InventoryIdentity
    locations: list[InventoryLevel] = Field(default_factory=list)


class Location(_Model):
    id: int
    code: str | None = None
    label: str | None = None
    enabled: bool | None = None
    type_id: str | None = None
    time_zone: str | None = None


# ------------------------------------------------------------------------------ store (v2)


class StoreTimezone(_Model):
    name: str | None = None
    raw_offset: int | None = None
    dst_offset: int | None = None


class Store(_Model):
    id: str
    name: str | None = None
    domain: str | None = None
    timezone: StoreTimezone | None = None
    currency: str | None = None
    plan_level: str | None = None
    plan_name: str | None = None

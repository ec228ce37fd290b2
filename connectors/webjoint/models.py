"""Pydantic models of the Webjoint payloads (extra fields allowed: the API adds fields freely).

Field names the API may spell differently come from api.py (first one present wins). A value
that makes a record unusable (no id, a date or amount that is not one) fails validation and
the record goes to quarantine with the reason; a doubtful value that does not (an odd birth
date) becomes None.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from aiq_sync.normalise import check_amount, parse_decimal
from connectors.webjoint import api

# ------------------------------------------------------------------------------ scalar parsers


def parse_stamp(value: Any) -> datetime | None:
    """ISO-8601 (`Z`, offset, or none = UTC) or epoch seconds/milliseconds -> aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    elif isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 1e11 else value  # epoch ms are common in JS APIs
        moment = datetime.fromtimestamp(seconds, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
        except ValueError:
            raise ValueError(f"not a timestamp: {value!r}") from None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # A8: no offset means UTC
    return moment.astimezone(UTC)


def _loose_stamp(value: Any) -> datetime | None:
    try:
        return parse_stamp(value)
    except ValueError:
        return None


def _loose_date(value: Any) -> date | None:
    """A birth date in any common form, or None (never a rejection)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(text[:10], fmt).date()
        except ValueError:
            continue
    moment = _loose_stamp(value)
    return moment.date() if moment else None


def parse_money(value: Any) -> Decimal | None:
    """A JSON number or a numeric string (`"12.50"`, `"$1,234.00"`) -> Decimal."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, int | float):
        # str(): 49.6 stays 49.6, not its binary expansion
        return check_amount(Decimal(str(value)), value)
    if isinstance(value, Decimal):
        return check_amount(value)
    if isinstance(value, str):
        parsed = parse_decimal(value)  # raises ValueError on anything else
        return parsed
    raise ValueError(f"not an amount: {value!r}")


def _taxes(value: Any) -> Decimal | None:
    """`taxes` is a number or a list of {name, amount} (summed)."""
    if isinstance(value, list):
        total = Decimal(0)
        for item in value:
            amount = item.get("amount", item.get("value")) if isinstance(item, dict) else item
            total += parse_money(amount) or 0
        return total
    return parse_money(value)


def _id(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    raise ValueError(f"not an id: {value!r}")


def _required_id(value: Any) -> str:
    text = _id(value)
    if text is None:
        raise ValueError("id is missing or empty")
    return text


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # {"name": ...} objects stand for their name
        value = value.get("name")
        if value is None:
            return None
    text = " ".join(str(value).split())
    return text or None


def _url(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("url")
    return _text(value)


def _list(value: Any) -> Any:
    return [] if value is None else value


Stamp = Annotated[datetime | None, BeforeValidator(parse_stamp)]
LooseStamp = Annotated[datetime | None, BeforeValidator(_loose_stamp)]
LooseDate = Annotated[date | None, BeforeValidator(_loose_date)]
Money = Annotated[Decimal | None, BeforeValidator(parse_money)]
Taxes = Annotated[Decimal | None, BeforeValidator(_taxes)]
Id = Annotated[str | None, BeforeValidator(_id)]
RequiredId = Annotated[str, BeforeValidator(_required_id)]
Text = Annotated[str | None, BeforeValidator(_text)]
Url = Annotated[str | None, BeforeValidator(_url)]


def aka(*names: str) -> Any:
    """Field accepting any of `names` (api.py lists the spellings the API may use)."""
    return Field(None, validation_alias=AliasChoices(*names))


class WebjointModel(BaseModel):
    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------------------------ models


class Facility(WebjointModel):
    id: RequiredId
    name: Text = None
    timezone: Text = aka("timezone", "timeZone", "tz")


class OrderCustomer(WebjointModel):
    id: Id = None
    first_name: Text = aka("firstName", "first_name")
    last_name: Text = aka("lastName", "last_name")
    name: Text = aka("name", "fullName")
    email: Text = None
    phone: Text = aka(*api.PHONE_FIELDS)


class OrderDetail(WebjointModel):
    id: Id = None
    product_id: Id = aka("productId", "product_id")
    sku: Text = None
    name: Text = aka("name", "productName")
    brand: Text = None
    category: Text = None
    quantity: Annotated[Decimal, BeforeValidator(parse_money)]
    price: Money = aka("price", "unitPrice")
    discount: Money = None
    tax: Taxes = aka(*api.TAX_FIELDS)
    total: Money = None


class Order(WebjointModel):
    id: RequiredId
    status: Text = None
    order_type: Text = aka(*api.ORDER_TYPE_FIELDS)
    customer_id: Id = aka("customerId", "customer_id", "userId")
    customer: OrderCustomer | None = None
    facility_id: Id = aka("facilityId", "facility_id")
    created: Stamp = aka(*api.ORDER_CREATED_FIELDS)
    updated: Stamp = aka(*api.ORDER_UPDATED_FIELDS)
    completed: Stamp = aka(*api.ORDER_COMPLETED_FIELDS)
    subtotal: Money = aka("subtotal", "subTotal")
    discount: Money = aka("discount", "discountTotal", "totalDiscount")
    taxes: Taxes = aka(*api.TAX_FIELDS)
    total: Money = aka("total", "grandTotal")
    refund_amount: Money = aka(*api.REFUND_AMOUNT_FIELDS)
    original_order_id: Id = aka(*api.ORIGINAL_ORDER_FIELDS)
    details: Annotated[list[OrderDetail], BeforeValidator(_list)] = Field(default_factory=list)


class Address(WebjointModel):
    street: Text = aka("street", "address1", "line1", "address", "streetAddress")
    street2: Text = aka("street2", "address2", "line2")
    city: Text = None
    state: Text = None
    postal_code: Text = aka("zip", "postalCode", "zipCode", "postal_code")


def _address(value: Any) -> Any:
    return {"street": value} if isinstance(value, str) else value


class Customer(WebjointModel):
    id: RequiredId
    first_name: Text = aka("firstName", "first_name")
    last_name: Text = aka("lastName", "last_name")
    name: Text = aka("name", "fullName")
    email: Text = None
    phone: Text = aka(*api.PHONE_FIELDS)
    birth_date: LooseDate = aka(*api.BIRTH_FIELDS)
    address: Annotated[Address | None, BeforeValidator(_address)] = None
    created: Stamp = aka(*api.CUSTOMER_CREATED_FIELDS)
    updated: Stamp = aka(*api.CUSTOMER_UPDATED_FIELDS)


class Variant(WebjointModel):
    id: Id = None
    product_id: Id = aka("productId", "product_id")
    sku: Text = None
    unit: Text = None
    price: Money = None


class Product(WebjointModel):
    id: RequiredId
    name: Text = None
    type: Text = None
    lineage: Text = None
    brand: Text = None
    strain: Text = None
    category: Text = None
    image: Url = aka("image", "imageUrl")
    variants: Annotated[list[Variant], BeforeValidator(_list)] = Field(
        default_factory=list, validation_alias=AliasChoices(*api.VARIANT_FIELDS)
    )
    updated: LooseStamp = aka("dateUpdated", "updatedAt", "lastModified")


class PackageQuantity(WebjointModel):
    location_id: Id = aka("locationId", "location_id", "roomId")
    location: Text = None
    quantity: Annotated[Decimal, BeforeValidator(parse_money)]


class Package(WebjointModel):
    id: Id = None
    product_id: RequiredId = aka("productId", "product_id")
    cost_per_item: Money = aka("costPerItem", "unitCost", "cost_per_item")
    received: LooseStamp = aka("received", "dateReceived", "receivedAt")
    quantities: Annotated[list[PackageQuantity], BeforeValidator(_list)] = Field(
        default_factory=list, validation_alias=AliasChoices("packageQuantities", "quantities")
    )
    quantity: Money = None  # the whole package, when it is not split by room


def reasons(exc: ValidationError, prefix: str = "") -> str:
    """A validation error as one readable line: `total: not an amount: 'N/A'; ...`."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(x) for x in err["loc"]) or "(record)"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "required field is missing"
        parts.append(f"{prefix}{where}: {message}")
    return "; ".join(parts)

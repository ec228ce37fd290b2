"""Landed BigCommerce records -> canonical personas, sales, items, products, inventory.

Mapping (docs/bigcommerce.md has the tables):
- customers -> core.personas, key `<source>:<customer id>`; phone from the customer, else the
  first address with a valid number; postal code and address from the first address;
- orders -> core.sales (one row per order, key `<source>:<order id>`, sold_at = date_created)
  + core.sale_items (one row per line item, line_id = the order product id) + a refund row
  `<source>:<order id>:refund` when money went back (statuses.py), + guest personas
  `<source>:guest:<e-mail or E.164 phone>` from the billing address of `customer_id: 0` orders;
  the pickup consignment's location id is the sale's location_key (NULL = online);
- products -> core.products, one row per variant (the sellable unit with its own SKU, price and
  stock), product_id `<product id>:<variant id>`, the same id sale items and inventory use;
- inventory -> core.inventory, one row per (variant, location), a full snapshot: rows of
  older snapshots are dropped when a newer one loads (CanonicalBatch.snapshots);
- store -> ops.sync_state (store time zone, name, currency, plan), nothing in core.

`_version` is the record's modification time, then the landing version: the newest edit wins
whatever order partitions load in. A record that fails its model is quarantined with the
record id and the field at fault; the others load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from aiq_sync.canonical import (
    QUARANTINE_SCHEMA,
    CanonicalBatch,
    NormaliseContext,
    PersonaFold,
    persona_key,
    sale_key,
)
from aiq_sync.landing import Manifest
from aiq_sync.normalise import clean_text, email_normal, phone_e164
from connectors.bigcommerce import statuses
from connectors.bigcommerce.models import (
    BillingAddress,
    Customer,
    InventoryItem,
    Location,
    Order,
    OrderProduct,
    Product,
    Store,
    loads,
)

M = TypeVar("M", bound=BaseModel)

DEC = pa.decimal128(18, 4)
TS = pa.timestamp("us", tz="UTC")
_Q = Decimal("0.0001")

PERSONA_SCHEMA = pa.schema(
    [
        ("persona_key", pa.string()), ("source", pa.string()), ("source_type", pa.string()),
        ("src_id", pa.string()), ("first_name", pa.string()), ("last_name", pa.string()),
        ("email", pa.string()), ("phone", pa.string()), ("postal_code", pa.string()),
        ("address", pa.string()), ("created_at", TS), ("updated_at", TS),
        ("_version", pa.string()),
    ]
)  # fmt: skip
SALES_SCHEMA = pa.schema(
    [
        ("sale_key", pa.string()), ("source", pa.string()), ("src_sale_id", pa.string()),
        ("persona_key", pa.string()), ("store_id", pa.string()), ("location_key", pa.string()),
        ("location_name", pa.string()), ("sold_at", TS), ("sold_local_date", pa.date32()),
        ("status", pa.string()), ("is_refund", pa.bool_()), ("refunded_sale_id", pa.string()),
        ("order_type", pa.string()), ("subtotal", DEC), ("discount", DEC), ("tax", DEC),
        ("total", DEC), ("currency", pa.string()), ("item_count", pa.int32()),
        ("_version", pa.string()),
    ]
)  # fmt: skip
ITEMS_SCHEMA = pa.schema(
    [
        ("sale_key", pa.string()), ("line_id", pa.string()), ("line_no", pa.int32()),
        ("source", pa.string()), ("sku", pa.string()), ("product_id", pa.string()),
        ("name", pa.string()), ("brand", pa.string()), ("category", pa.string()),
        ("quantity", DEC), ("unit_price", DEC), ("subtotal", DEC), ("discount", DEC),
        ("tax", DEC), ("total", DEC), ("_version", pa.string()),
    ]
)  # fmt: skip
PRODUCTS_SCHEMA = pa.schema(
    [
        ("source", pa.string()), ("product_id", pa.string()), ("sku", pa.string()),
        ("name", pa.string()), ("brand", pa.string()), ("category", pa.string()),
        ("price", DEC), ("image_url", pa.string()), ("updated_at", TS),
        ("_version", pa.string()),
    ]
)  # fmt: skip
INVENTORY_SCHEMA = pa.schema(
    [
        ("source", pa.string()), ("store_id", pa.string()), ("location_key", pa.string()),
        ("location_name", pa.string()), ("sku", pa.string()), ("product_id", pa.string()),
        ("quantity", DEC), ("snapshot_at", TS), ("_version", pa.string()),
    ]
)  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def _money(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_Q)


def _stamp(moment: datetime | None) -> str:
    # Fixed width, UTC: versions compare as strings.
    if moment is None:
        return "0000-00-00T00:00:00.000000Z"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_version(moment: datetime | None, manifest: Manifest) -> str:
    return f"{_stamp(moment)}|{manifest.version}"


def catalog_id(product_id: int | None, variant_id: int | None) -> str | None:
    """The canonical product id of a BigCommerce variant: `<product id>:<variant id>`."""
    if not product_id:
        return None  # custom products and gift certificates have no catalog product
    return f"{product_id}:{variant_id}" if variant_id else str(product_id)


def _field_path(loc: tuple[Any, ...], raw: Any) -> str:
    """A pydantic error location as a readable path; line items are named by their id.

    Union tags (`object`, `item`, `list[...]`) are dropped: they are not fields."""
    parts: list[str] = []
    node = raw
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p in _TAGS or "[" in p)))
    i = 0
    while i < len(loc):
        part = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if part in ("line_items", "_line_items") and isinstance(nxt, int):
            items = node.get(part) if isinstance(node, dict) else None
            item = items[nxt] if isinstance(items, list) and nxt < len(items) else None
            label = item.get("id") if isinstance(item, dict) else None
            parts.append(f"line item {label if label is not None else f'#{nxt}'}")
            node, i = item, i + 2
            continue
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        i += 1
    return ".".join(parts) or "(record)"


_TAGS = {"object", "item", "link", "ResourceLink", "Consignments", "OrderProduct"}


def validation_reason(kind: str, record_id: str, exc: ValidationError, raw: Any) -> str:
    problems = []
    for err in exc.errors()[:3]:
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = (
            ""
            if isinstance(got, dict | list) or "got" in message or "'" in message
            else (f" (got {json.dumps(got, default=str)[:60]})")
        )
        problems.append(f"{_field_path(tuple(err['loc']), raw)}: {message}{shown}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"{kind} {record_id}: " + "; ".join(problems) + more


class _Quarantine:
    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.rows: list[tuple[str, str, str]] = []

    def add(self, record_id: str, reason: str, raw: str) -> None:
        self.rows.append((record_id, reason, raw))

    def table(self) -> pa.Table:
        n = len(self.rows)
        return pa.table(
            {
                "partition_key": [self.manifest.partition_key] * n,
                "file": pa.array([None] * n, pa.string()),
                "line": pa.array([None] * n, pa.int64()),
                "record_id": [r[0] for r in self.rows],
                "reason": [r[1] for r in self.rows],
                "raw": [r[2] for r in self.rows],
            },
            schema=QUARANTINE_SCHEMA,
        )


def _parse(
    raw: pa.Table,
    model: type[M],
    kind: str,
    quarantine: _Quarantine,
    accept: Callable[[str], bool] = lambda _id: True,
) -> Iterable[tuple[str, M]]:
    ids = raw.column("id").to_pylist()
    texts = raw.column("payload").to_pylist()
    for record_id, text in zip(ids, texts, strict=True):
        if not accept(record_id):
            continue
        try:
            data = loads(text)
        except ValueError:
            quarantine.add(record_id, f"{kind} {record_id}: payload is not valid JSON", text)
            continue
        try:
            yield record_id, model.model_validate(data)
        except ValidationError as exc:
            quarantine.add(record_id, validation_reason(kind, record_id, exc, data), text)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def _address(*parts: str | None) -> str | None:
    return clean_text(", ".join(p.strip() for p in parts if p and p.strip()))


# --------------------------------------------------------------------------- customers


class CustomersNormaliser:
    entity = "customers"

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = _Quarantine(manifest)
        fold = PersonaFold()
        invalid_phone = invalid_email = 0
        for _, customer in _parse(raw, Customer, "customer", quarantine):
            email = email_normal(customer.email)
            invalid_email += bool(customer.email and customer.email.strip() and not email)
            phone = phone_e164(customer.phone)
            invalid_phone += bool(customer.phone and customer.phone.strip() and not phone)
            addresses = sorted(customer.addresses, key=lambda a: a.id or 0)
            if phone is None:
                phone = next((p for a in addresses if (p := phone_e164(a.phone))), None)
            first = addresses[0] if addresses else None
            fold.add(
                {
                    "persona_key": persona_key(context.source, str(customer.id)),
                    "source": context.source,
                    "source_type": context.source_type,
                    "src_id": str(customer.id),
                    "first_name": clean_text(customer.first_name),
                    "last_name": clean_text(customer.last_name),
                    "email": email,
                    "phone": phone,
                    "postal_code": clean_text(first.postal_code) if first else None,
                    "address": _address(
                        first.address1,
                        first.address2,
                        first.city,
                        first.state_or_province,
                        first.country_code,
                    )
                    if first
                    else None,
                    "created_at": customer.date_created,
                    "updated_at": customer.date_modified,
                    "_version": record_version(customer.date_modified, manifest),
                }
            )
        batch.quarantine = quarantine.table()
        batch.notes = {"invalid_phone": invalid_phone, "invalid_email": invalid_email}
        batch.tables["core.personas"] = _table(list(fold.rows.values()), PERSONA_SCHEMA)
        return batch


# ------------------------------------------------------------------------------ orders


def guest_persona(
    billing: BillingAddress | None, source: str
) -> tuple[str | None, str | None, str | None]:
    """(persona key, e-mail, phone) of a guest, keyed by e-mail, else E.164 phone, else None."""
    if billing is None:
        return None, None, None
    email, phone = email_normal(billing.email), phone_e164(billing.phone)
    ident = email or phone
    if ident is None:
        return None, email, phone
    return persona_key(source, f"guest:{ident}"), email, phone


def refund_amount(order: Order, items: list[OrderProduct]) -> Decimal:
    """What went back to the shopper, from `refunded_amount`, else per the status (see
    statuses.py). Never more than the order total."""
    total = order.total_inc_tax or Decimal(0)
    amount = order.refunded_amount or Decimal(0)
    if amount <= 0:
        how = statuses.refund_fallback(order.status_id)
        if how == statuses.FULL:
            amount = total
        elif how == statuses.ITEMS:
            amount = sum((_item_refund(item) for item in items), Decimal(0))
    return max(Decimal(0), min(amount, total))


def _item_refund(item: OrderProduct) -> Decimal:
    line_total = item.total_inc_tax or Decimal(0)
    if item.refund_amount and item.refund_amount > 0:
        return item.refund_amount
    if item.quantity_refunded and item.quantity and item.quantity > 0:
        return line_total * min(item.quantity_refunded, item.quantity) / item.quantity
    return line_total if item.is_refunded else Decimal(0)


class OrdersNormaliser:
    entity = "orders"

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = _Quarantine(manifest)
        tz = ZoneInfo(context.timezone)
        src = context.source
        sales: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        guests = PersonaFold()
        notes = {"guest_without_contact": 0, "refund_amount_unknown": 0, "refund_rows": 0}
        ids = raw.column("id").to_pylist()
        texts = dict(zip(ids, raw.column("payload").to_pylist(), strict=True))
        for order_id, order in _parse(raw, Order, "order", quarantine):
            if order.status_id not in statuses.STATUS_MAP:
                reason = (
                    f"order {order_id}: status_id: {order.status_id} is not a BigCommerce "
                    "order status (0-14)"
                )
                quarantine.add(order_id, reason, texts[order_id])
                continue
            version = record_version(order.date_modified, manifest)
            key = sale_key(src, str(order.id))
            lines = order.line_items()
            if order.customer_id:
                buyer = persona_key(src, str(order.customer_id))
            else:
                buyer, email, phone = guest_persona(order.billing_address, src)
                if buyer is None:
                    notes["guest_without_contact"] += 1  # an anonymous sale stays a sale
                else:
                    guests.add(self._guest(buyer, email, phone, order, context, version))
            location = order.pickup_location()
            location_key = str(location.id) if location else None
            status = statuses.canonical_status(order.status_id, order.is_deleted)
            header = {
                "sale_key": key,
                "source": src,
                "src_sale_id": str(order.id),
                "persona_key": buyer,
                "store_id": context.store_map.get(location_key) if location_key else None,
                "location_key": location_key,
                "location_name": clean_text(location.name) if location else None,
                "sold_at": order.date_created,
                "sold_local_date": order.date_created.astimezone(tz).date(),
                "status": status,
                "is_refund": False,
                "refunded_sale_id": None,
                "order_type": order.fulfilment(),
                "subtotal": _money(order.subtotal_ex_tax),
                "discount": _money(order.discount_amount),
                "tax": _money(order.total_tax),
                "total": _money(order.total_inc_tax),
                "currency": order.default_currency_code or order.currency_code,
                "item_count": len(lines),
                "_version": version,
            }
            sales.append(header)
            for line_no, item in enumerate(lines, 1):
                items.append(self._item(key, line_no, item, src, version))
            if status == statuses.COMPLETED:
                refund = refund_amount(order, lines)
                if refund > 0:
                    sales.append(self._refund(header, order, refund, tz))
                    notes["refund_rows"] += 1
                elif statuses.refund_fallback(order.status_id) == statuses.ITEMS:
                    notes["refund_amount_unknown"] += 1
        batch.quarantine = quarantine.table()
        batch.notes = notes
        batch.tables = {
            "core.sales": _table(sales, SALES_SCHEMA),
            "core.sale_items": _table(items, ITEMS_SCHEMA),
            "core.personas": _table(list(guests.rows.values()), PERSONA_SCHEMA),
        }
        return batch

    @staticmethod
    def _guest(
        key: str,
        email: str | None,
        phone: str | None,
        order: Order,
        context: NormaliseContext,
        version: str,
    ) -> dict[str, Any]:
        b = order.billing_address
        assert b is not None
        return {
            "persona_key": key,
            "source": context.source,
            "source_type": context.source_type,
            "src_id": key.split(":", 1)[1],
            "first_name": clean_text(b.first_name),
            "last_name": clean_text(b.last_name),
            "email": email,
            "phone": phone,
            "postal_code": clean_text(b.zip),
            "address": _address(b.street_1, b.street_2, b.city, b.state, b.country_iso2),
            "created_at": None,
            "updated_at": order.date_modified,
            "_version": version,
        }

    @staticmethod
    def _item(
        key: str, line_no: int, item: OrderProduct, source: str, version: str
    ) -> dict[str, Any]:
        discount = sum((d.amount or Decimal(0) for d in item.applied_discounts), Decimal(0))
        subtotal = item.total_ex_tax
        return {
            "sale_key": key,
            "line_id": str(item.id),
            "line_no": line_no,
            "source": source,
            "sku": clean_text(item.sku),
            "product_id": catalog_id(item.product_id, item.variant_id),
            "name": clean_text(item.name_customer or item.name),
            "brand": clean_text(item.brand),
            "category": None,
            "quantity": _money(item.quantity),
            "unit_price": _money(item.price_ex_tax),
            "subtotal": _money(subtotal),
            "discount": _money(discount),
            "tax": _money(item.total_tax),
            "total": _money(subtotal - discount) if subtotal is not None else None,
            "_version": version,
        }

    @staticmethod
    def _refund(
        header: dict[str, Any], order: Order, refund: Decimal, tz: ZoneInfo
    ) -> dict[str, Any]:
        total = order.total_inc_tax or Decimal(0)
        # The tax share of the refund, pro rata: loyalty reverses points on the pre-tax part.
        tax = (refund * (order.total_tax or Decimal(0)) / total).quantize(_Q) if total else None
        refunded_at = order.date_modified  # the v2 order carries no refund date
        return {
            **header,
            "sale_key": f"{header['sale_key']}:refund",
            "src_sale_id": f"{order.id}:refund",
            "sold_at": refunded_at,
            "sold_local_date": refunded_at.astimezone(tz).date(),
            "status": statuses.REFUND,
            "is_refund": True,
            "refunded_sale_id": str(order.id),
            "subtotal": _money(-(refund - (tax or 0))),
            "discount": None,
            "tax": _money(-tax) if tax is not None else None,
            "total": _money(-refund),
            "item_count": None,
        }


# ---------------------------------------------------------------------------- products


class ProductsNormaliser:
    entity = "products"

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = _Quarantine(manifest)
        rows: dict[str, dict[str, Any]] = {}
        for _, product in _parse(raw, Product, "product", quarantine):
            version = record_version(product.date_modified, manifest)
            variants = product.variants or []
            base = {
                "source": context.source,
                "name": clean_text(product.name),
                "brand": None,  # only brand_id in the payload; names need /v3/catalog/brands
                "category": None,
                "updated_at": product.date_modified,
                "_version": version,
            }
            if not variants:  # include=variants always returns the base variant; be lenient
                pid = catalog_id(product.id, product.base_variant_id)
                assert pid is not None
                price = product.calculated_price or product.price
                row = {**base, "product_id": pid, "sku": clean_text(product.sku)}
                rows[pid] = {**row, "price": _money(price), "image_url": None}
                continue
            for variant in variants:
                pid = catalog_id(product.id, variant.id)
                assert pid is not None
                price = next(
                    (
                        p
                        for p in (
                            variant.calculated_price,
                            variant.price,
                            product.calculated_price,
                            product.price,
                        )
                        if p is not None
                    ),
                    None,
                )
                candidate = {
                    **base,
                    "product_id": pid,
                    "sku": clean_text(variant.sku) or clean_text(product.sku),
                    "price": _money(price),
                    "image_url": clean_text(variant.image_url),
                }
                old = rows.get(pid)
                if old is None or old["_version"] <= version:
                    rows[pid] = candidate
        batch.quarantine = quarantine.table()
        batch.tables["core.products"] = _table(list(rows.values()), PRODUCTS_SCHEMA)
        return batch


# --------------------------------------------------------------------------- inventory

ITEM_PREFIX, LOCATION_PREFIX = "item:", "location:"


class InventoryNormaliser:
    """A snapshot: core.inventory for the source becomes exactly the newest one loaded."""

    entity = "inventory"

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = _Quarantine(manifest)
        names: dict[int, str | None] = {}
        for _, location in _parse(
            raw, Location, "location", quarantine, lambda i: i.startswith(LOCATION_PREFIX)
        ):
            names[location.id] = clean_text(location.label)
        rows: list[dict[str, Any]] = []
        items = 0
        for _, item in _parse(
            raw, InventoryItem, "inventory item", quarantine, lambda i: i.startswith(ITEM_PREFIX)
        ):
            items += 1
            ident = item.identity
            for level in item.locations:
                key = str(level.location_id)
                rows.append(
                    {
                        "source": context.source,
                        "store_id": context.store_map.get(key),
                        "location_key": key,
                        "location_name": names.get(level.location_id)
                        or clean_text(level.location_name),
                        "sku": clean_text(ident.sku),
                        "product_id": catalog_id(ident.product_id, ident.variant_id),
                        # What can be sold now: on hand minus safety stock and reservations.
                        "quantity": _money(level.available_to_sell),
                        "snapshot_at": manifest.extracted_at,
                        "_version": manifest.version,
                    }
                )
        raw_items = sum(1 for i in raw.column("id").to_pylist() if i.startswith(ITEM_PREFIX))
        batch.quarantine = quarantine.table()
        batch.tables["core.inventory"] = _table(rows, INVENTORY_SCHEMA)
        # A snapshot whose every item was rejected is not a picture of the store: keep the last.
        if items or not raw_items:
            batch.snapshots["core.inventory"] = manifest.version
        return batch


# ------------------------------------------------------------------------------- store


class StoreNormaliser:
    """The store's own facts go to ops.sync_state (entity `store`), e.g. its time zone."""

    entity = "store"

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = _Quarantine(manifest)
        for _, store in _parse(raw, Store, "store", quarantine):
            facts = {
                "timezone": store.timezone.name if store.timezone else None,
                "name": store.name,
                "currency": store.currency,
                "plan_level": store.plan_level,
            }
            batch.state.update({k: v for k, v in facts.items() if v})
            if facts["timezone"] and facts["timezone"] != context.timezone:
                batch.notes["timezone_mismatch"] = 1
        batch.quarantine = quarantine.table()
        return batch


NORMALISERS = [
    CustomersNormaliser(),
    OrdersNormaliser(),
    ProductsNormaliser(),
    InventoryNormaliser(),
    StoreNormaliser(),
]

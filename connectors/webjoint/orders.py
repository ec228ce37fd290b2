"""Landed Webjoint orders -> core.sales, core.sale_items (and personas the orders name).

- One row per order id (a partition may hold several versions: the newest wins here, and the
  loader's merge applies the same rule across partitions).
- `status`: `Complete` -> `completed` (a sale); other statuses are kept lower-cased
  (`cancelled`, `pending`, ...) and count nowhere. An order whose status became refunded
  (`Refunded`, `Partially Refunded`, ...) stays a completed sale, and a refund row
  `<id>:refund` is derived from it (amount: `refundAmount`, else the whole order). A `Return`
  order that is `Complete` is a refund of `originalOrderId`; one not complete yet is kept
  with status `return_<status>` and counts nowhere. Refund amounts and quantities are
  negative, whatever sign the API used.
- `location_key` = facility id; `store_id` from `stores[].keys.<source>`; unmapped facilities
  reach ops.unmapped_locations through the loader.
- The order's customer becomes a persona with the lowest priority (`_version` `0|...`): a
  customer record from the customers entity always wins, blanks never erase.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from pydantic import ValidationError

from aiq_sync.canonical import CanonicalBatch, NormaliseContext, persona_key, sale_key
from aiq_sync.landing import Manifest
from aiq_sync.normalise import email_normal, phone_e164, split_name
from connectors.webjoint import api
from connectors.webjoint.common import (
    ORDER_PERSONAS,
    SALE_ITEMS,
    SALES,
    Quarantine,
    newest_by_id,
    to_table,
)
from connectors.webjoint.extract import FACILITY_KEY, ORDERS
from connectors.webjoint.models import Order, OrderDetail, reasons

ZERO = Decimal(0)
_Q = Decimal("0.0001")


def money(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_Q)


def _status(raw: str | None) -> str:
    if raw is None:
        return "unknown"
    if raw.casefold() == api.COMPLETE.casefold():
        return "completed"
    return "_".join(raw.lower().split())


def _is(raw: str | None, names: frozenset[str]) -> bool:
    return raw is not None and raw.casefold() in {n.casefold() for n in names}


class WebjointOrdersNormaliser:
    entity = ORDERS

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = Quarantine(manifest)
        sales: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        personas: dict[str, dict[str, Any]] = {}
        zone = ZoneInfo(context.timezone)
        for record in newest_by_id(raw):
            payload = record.payload
            try:
                order = Order.model_validate(payload)
            except ValidationError as exc:
                quarantine.add(record.id or None, reasons(exc), record.text)
                continue
            facility = payload.get(FACILITY_KEY) or {}
            location = order.facility_id or (str(facility["id"]) if facility.get("id") else None)
            sold_at = order.completed or order.created or order.updated
            problem = None
            if sold_at is None:
                problem = "no order date (dateCompleted, dateCreated and dateUpdated all blank)"
            elif location is None:
                problem = "no facility id (facilityId blank and not listed under a facility)"
            if problem:
                quarantine.add(order.id, problem, record.text)
                continue
            assert sold_at is not None and location is not None
            version = record.version(order.updated or sold_at)
            try:
                rows, lines = self._sale(order, sold_at, location, facility, version, context)
            except ValueError as exc:
                quarantine.add(order.id, str(exc), record.text)
                continue
            for row in rows:
                row["sold_local_date"] = row["sold_at"].astimezone(zone).date()
            sales.extend(rows)
            items.extend(lines)
            self._persona(order, version, context, personas, batch)
        batch.quarantine = quarantine.table()
        batch.tables = {
            name: table
            for name, table in (
                ("core.sales", to_table(sales, SALES)),
                ("core.sale_items", to_table(items, SALE_ITEMS)),
                ("core.personas", to_table(list(personas.values()), ORDER_PERSONAS)),
            )
            if table is not None
        }
        return batch

    def _sale(
        self,
        order: Order,
        sold_at: datetime,
        location: str,
        facility: dict[str, Any],
        version: str,
        ctx: NormaliseContext,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        is_return = _is(order.order_type, api.RETURN_ORDER_TYPES) or (
            order.total is not None and order.total < 0
        )
        complete = _status(order.status) == "completed"
        sign = -1 if is_return else 1
        lines = [self._line(ctx, order, d, i, sign, version) for i, d in enumerate(order.details)]
        subtotal = order.subtotal
        if subtotal is None and lines:
            subtotal = sum((abs(line["subtotal"] or ZERO) for line in lines), ZERO)
        discount = order.discount
        if discount is None and lines:
            discount = sum((abs(line["discount"] or ZERO) for line in lines), ZERO)
        tax = order.taxes
        if tax is None and lines:
            tax = sum((abs(line["tax"] or ZERO) for line in lines), ZERO)
        total = order.total
        if total is None and subtotal is not None:
            total = subtotal - (discount or ZERO) + (tax or ZERO)
        if total is None:
            raise ValueError("total: missing, and no details to compute it from")

        def signed(value: Decimal | None, s: int = sign) -> Decimal | None:
            return None if value is None else money(abs(value) * s)

        if is_return:
            status = "refund" if complete else f"return_{_status(order.status)}"
        elif _is(order.status, api.REFUNDED_STATUSES):
            status = "completed"  # it was a sale; the refund is its own row below
        else:
            status = _status(order.status)
        cid = order.customer_id if order.customer_id not in (None, "0") else None
        base = {
            "source": ctx.source,
            "persona_key": persona_key(ctx.source, cid) if cid else None,
            # By facility id, else by facility name (as the loader's store re-mapping does).
            "store_id": ctx.store_map.get(location) or ctx.store_map.get(facility.get("name")),
            "location_key": location,
            "location_name": facility.get("name"),
            "order_type": order.order_type,
            "currency": api.CURRENCY,
            "_version": version,
        }
        sale = {
            **base,
            "sale_key": sale_key(ctx.source, order.id),
            "src_sale_id": order.id,
            "sold_at": sold_at,
            "status": status,
            "is_refund": is_return and complete,
            "refunded_sale_id": order.original_order_id if is_return else None,
            "subtotal": signed(subtotal),
            "discount": signed(discount),
            "tax": signed(tax),
            "total": signed(total),
            "item_count": len(lines),
        }
        rows = [sale]
        if not is_return and _is(order.status, api.REFUNDED_STATUSES):
            rows.append(self._refund(order, base, subtotal, discount, tax, total, ctx))
        return rows, lines

    @staticmethod
    def _refund(
        order: Order,
        base: dict[str, Any],
        subtotal: Decimal | None,
        discount: Decimal | None,
        tax: Decimal | None,
        total: Decimal,
        ctx: NormaliseContext,
    ) -> dict[str, Any]:
        """The refund an order's refunded status stands for: the whole order, or its share
        `refundAmount / total` (tax refunded in the same proportion)."""
        amount = abs(order.refund_amount) if order.refund_amount is not None else abs(total)
        share = min(Decimal(1), amount / abs(total)) if total else Decimal(1)
        refund_tax = (abs(tax) * share).quantize(Decimal("0.01")) if tax is not None else None
        if share == 1:
            values = (subtotal, discount, tax, total)
        else:
            values = (amount - (refund_tax or ZERO), None, refund_tax, amount)
        src = f"{order.id}:refund"
        refunded_at = order.updated or order.completed or order.created
        return {
            **base,
            "sale_key": sale_key(ctx.source, src),
            "src_sale_id": src,
            "sold_at": refunded_at,
            "status": "refund",
            "is_refund": True,
            "refunded_sale_id": order.id,
            "subtotal": None if values[0] is None else money(-abs(values[0])),
            "discount": None if values[1] is None else money(-abs(values[1])),
            "tax": None if values[2] is None else money(-abs(values[2])),
            "total": money(-abs(values[3])),
            "item_count": 0,
        }

    @staticmethod
    def _line(
        ctx: NormaliseContext, order: Order, d: OrderDetail, i: int, sign: int, version: str
    ) -> dict[str, Any]:
        quantity = abs(d.quantity) * sign if sign < 0 else d.quantity
        unit = abs(d.price) if d.price is not None else None
        subtotal = unit * abs(d.quantity) if unit is not None else None
        discount = abs(d.discount) if d.discount is not None else None
        total = abs(d.total) if d.total is not None else None
        if total is None and subtotal is not None:
            total = subtotal - (discount or ZERO)
        if subtotal is None and total is not None:
            subtotal = total + (discount or ZERO)

        def signed(value: Decimal | None) -> Decimal | None:
            return None if value is None else money(value * sign)

        return {
            "sale_key": sale_key(ctx.source, order.id),
            "line_id": d.id or f"#{i + 1}",
            "line_no": i + 1,
            "source": ctx.source,
            "sku": d.sku or d.product_id,
            "product_id": d.product_id,
            "name": d.name,
            "brand": d.brand,
            "category": d.category,
            "quantity": money(quantity),
            "unit_price": money(unit),
            "subtotal": signed(subtotal),
            "discount": signed(discount),
            "tax": signed(abs(d.tax) if d.tax is not None else None),
            "total": signed(total),
            "_version": version,
        }

    @staticmethod
    def _persona(
        order: Order,
        version: str,
        ctx: NormaliseContext,
        personas: dict[str, dict[str, Any]],
        batch: CanonicalBatch,
    ) -> None:
        cid = order.customer_id or (order.customer.id if order.customer else None)
        if cid in (None, "0"):
            return
        key = persona_key(ctx.source, cid)
        row_version = f"0|{version}"  # below any customer record's version
        held = personas.get(key)
        if held is not None and held["_version"] >= row_version:
            return
        c = order.customer
        first, last = (c.first_name, c.last_name) if c else (None, None)
        if c and not (first or last) and c.name:
            first, last = split_name(c.name)
        phone = phone_e164(c.phone) if c and c.phone else None
        email = email_normal(c.email) if c and c.email else None
        personas[key] = {
            "persona_key": key,
            "source": ctx.source,
            "source_type": ctx.source_type,
            "src_id": cid,
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": phone,
            "_version": row_version,
        }

"""Landed Webjoint inventory snapshots -> core.products and core.inventory; facilities.

Products: one row per sellable variant (`product_id` = `variant.productId`, sku falling back
to it), price from the variant.

Inventory: one row per (location, sellable) for every sellable the facility lists, with 0
when it has no stock, so each snapshot refreshes every row it owns (a sold-out item is not
left with yesterday's quantity). The location is the facility (`location_key` = facility id)
with the stock of all its rooms summed, except rooms mapped to a store on their own in the
config (`stores[].keys.<source>: "<facility id>/<room id>"`), which get their own rows.
`unit_cost` is the quantity-weighted `costPerItem` of the packages counted, `unit_price` the
variant price, `margin` = unit_price - unit_cost per item.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from aiq_sync.canonical import CanonicalBatch, NormaliseContext
from aiq_sync.landing import Manifest
from connectors.webjoint.common import (
    INVENTORY as INVENTORY_SCHEMA,
)
from connectors.webjoint.common import (
    PRODUCTS,
    Quarantine,
    digest,
    newest_by_id,
    snapshot_time,
    stamp,
    to_table,
)
from connectors.webjoint.extract import FACILITIES, INVENTORY
from connectors.webjoint.models import Facility, Package, Product, reasons
from connectors.webjoint.orders import money

ZERO = Decimal(0)


def room_key(facility_id: str, room_id: str) -> str:
    return f"{facility_id}/{room_id}"


class _Stock:
    """Quantity and cost of one (location, sellable)."""

    def __init__(self) -> None:
        self.quantity = ZERO
        self.cost_weight = ZERO  # sum(quantity * cost) over packages with a cost
        self.costed_quantity = ZERO
        self.costs: list[Decimal] = []

    def add(self, quantity: Decimal, cost: Decimal | None) -> None:
        self.quantity += quantity
        if cost is not None:
            self.costs.append(cost)
            if quantity > 0:
                self.cost_weight += quantity * cost
                self.costed_quantity += quantity

    def unit_cost(self) -> Decimal | None:
        if self.costed_quantity > 0:
            return self.cost_weight / self.costed_quantity
        return sum(self.costs, ZERO) / len(self.costs) if self.costs else None


class WebjointInventoryNormaliser:
    entity = INVENTORY

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = Quarantine(manifest)
        taken = snapshot_time(manifest)
        products: dict[str, tuple[str, dict[str, Any]]] = {}
        inventory: list[dict[str, Any]] = []
        names: dict[str, str] = {}  # location key -> "Facility" or "Facility / Room"
        for record in newest_by_id(raw):
            payload = record.payload
            facility = payload.get("facility") or {}
            facility_id = str(facility.get("id") or "")
            if not facility_id:
                quarantine.add(record.id, "no facility id on the snapshot record", record.text)
                continue
            if facility.get("name"):
                names[facility_id] = str(facility["name"])
            sellables: dict[str, dict[str, Any]] = {}  # product id -> product row
            if payload.get("product") is not None:
                try:
                    product = Product.model_validate(payload["product"])
                except ValidationError as exc:
                    quarantine.add(record.id, reasons(exc, "product."), record.text)
                    continue
                sellables = self._sellables(product, context)
            elif payload.get("product_id"):
                pid = str(payload["product_id"])
                sellables = {pid: {"source": context.source, "product_id": pid, "sku": pid}}
            stock: dict[tuple[str, str], _Stock] = defaultdict(_Stock)
            rooms = self._mapped_rooms(facility_id, context)
            for i, raw_package in enumerate(payload.get("packages") or []):
                try:
                    package = Package.model_validate(raw_package)
                except ValidationError as exc:
                    pid = raw_package.get("id") if isinstance(raw_package, dict) else None
                    label = f"{record.id}:package:{pid if pid is not None else i}"
                    quarantine.add(label, reasons(exc, "package."), json_text(raw_package))
                    continue
                cost = money(package.cost_per_item)
                sellables.setdefault(
                    package.product_id,
                    {
                        "source": context.source,
                        "product_id": package.product_id,
                        "sku": package.product_id,
                    },
                )
                if not package.quantities and package.quantity is not None:
                    stock[(facility_id, package.product_id)].add(package.quantity, cost)
                for part in package.quantities:
                    room = room_key(facility_id, part.location_id) if part.location_id else None
                    if room and part.location:
                        names[room] = f"{names.get(facility_id, facility_id)} / {part.location}"
                    where = room if room in rooms else facility_id
                    stock[(where, package.product_id)].add(part.quantity, cost)
            version = f"{stamp(taken)}|{digest(record.text)}"
            for pid, product_row in sellables.items():
                if "name" in product_row:  # a listed product (not only packages)
                    # The same product is listed by every facility: one row, chosen the same
                    # way every time (facility id breaks ties between equal versions).
                    row_version = f"{version}|{facility_id}"
                    held = products.get(pid)
                    if held is None or held[0] < row_version:
                        products[pid] = (row_version, {**product_row, "_version": row_version})
                price = product_row.get("price")
                for location in (facility_id, *sorted(rooms)):
                    held_stock = stock.get((location, pid)) or _Stock()
                    cost = held_stock.unit_cost()
                    inventory.append(
                        {
                            "source": context.source,
                            "store_id": context.store_map.get(location),
                            "location_key": location,
                            "sku": product_row.get("sku") or pid,
                            "product_id": pid,
                            "quantity": money(held_stock.quantity),
                            "unit_cost": money(cost),
                            "unit_price": money(price),
                            "margin": money(price - cost)
                            if price is not None and cost is not None
                            else None,
                            "snapshot_at": taken,
                            "_version": version,
                        }
                    )
        for row in inventory:
            row["location_name"] = names.get(row["location_key"])
        batch.quarantine = quarantine.table()
        if inventory:
            # The snapshot is complete: rows of older snapshots of this source are dropped.
            batch.snapshots["core.inventory"] = stamp(taken)
        tables = {
            "core.products": to_table([row for _, row in products.values()], PRODUCTS),
            "core.inventory": to_table(inventory, INVENTORY_SCHEMA),
        }
        batch.tables = {k: v for k, v in tables.items() if v is not None}
        return batch

    @staticmethod
    def _mapped_rooms(facility_id: str, context: NormaliseContext) -> set[str]:
        prefix = f"{facility_id}/"
        return {key for key in context.store_map if key.startswith(prefix)}

    @staticmethod
    def _sellables(product: Product, context: NormaliseContext) -> dict[str, dict[str, Any]]:
        variants = product.variants or []
        out: dict[str, dict[str, Any]] = {}
        several = len(variants) > 1
        for variant in variants or [None]:
            pid = (variant.product_id if variant else None) or product.id
            unit = variant.unit if variant else None
            name = product.name
            if several and unit and name:
                name = f"{name} {unit}"
            out[pid] = {
                "source": context.source,
                "product_id": pid,
                "sku": (variant.sku if variant else None) or pid,
                "name": name,
                "brand": product.brand,
                "category": product.category or product.type,
                "price": money(variant.price) if variant else None,
                "image_url": product.image,
                "updated_at": product.updated,
            }
        return out


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class WebjointFacilitiesNormaliser:
    """Facilities carry no canonical rows (stores come from the config); a facility record
    without an id is quarantined so a broken discovery answer is visible."""

    entity = FACILITIES

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = Quarantine(manifest)
        for record in newest_by_id(raw):
            try:
                Facility.model_validate(record.payload)
            except ValidationError as exc:
                quarantine.add(record.id or None, reasons(exc), record.text)
        batch.quarantine = quarantine.table()
        return batch

"""Webjoint mapping: landed records -> canonical rows through the real loader and DuckDB.

Orders (sales, refunds both ways, returns, statuses, newest version wins, quarantine),
customers (personas; order-named personas never override them), inventory (rooms, cost,
margin, snapshots), and the reconstructed-API helpers (date parameters, range, payloads)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aiq_sync import warehouse
from aiq_sync.canonical import NormaliseContext
from aiq_sync.extract import RAW_RECORD_SCHEMA, Window
from aiq_sync.landing import Landing
from aiq_sync.loader import load_source
from connectors.webjoint import (
    WebjointCustomersNormaliser,
    WebjointFacilitiesNormaliser,
    WebjointInventoryNormaliser,
    WebjointOrdersNormaliser,
    api,
)
from connectors.webjoint.dedup import NewestById
from connectors.webjoint.extract import record_time
from connectors.webjoint.models import Order, parse_money, parse_stamp

CTX = NormaliseContext(
    source="wj",
    source_type="webjoint",
    timezone="America/Los_Angeles",
    store_map={"51": "midtown", "52/5202": "vault-store"},
)
T0 = datetime(2025, 3, 10, 18, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def order(oid: int = 1001, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": oid,
        "facilityId": 51,
        "customerId": 7,
        "customer": {"id": 7, "firstName": "Ana", "lastName": "Lopez", "email": "Ana@X.com",
                     "phone": "(916) 234-5678"},
        "status": "Complete",
        "orderType": "In-Store",
        "dateCreated": iso(T0),
        "dateCompleted": iso(T0 + timedelta(minutes=5)),
        "dateUpdated": iso(T0 + timedelta(minutes=5)),
        "subtotal": 50.0,
        "discount": 5.0,
        "taxes": 6.86,
        "total": 51.86,
        "details": [
            {"id": 1, "productId": 900001, "sku": "WJ-1", "name": "Blue Dream 3.5g",
             "brand": "Acme", "category": "Flower", "quantity": 1, "price": 30.0,
             "discount": 5.0, "tax": 3.81, "total": 25.0},
            {"id": 2, "productId": 900002, "sku": None, "name": "Gummies", "quantity": 2,
             "price": 10.0, "discount": 0, "tax": 3.05, "total": 20.0},
        ],
        "_facility": {"id": "51", "name": "Midtown"},
    }  # fmt: skip
    body.update(overrides)
    return body


def landed(records: list[tuple[str, datetime | None, Any]]) -> pa.Table:
    return pa.table(
        {
            "id": [r[0] for r in records],
            "modified_at": [r[1] for r in records],
            "payload": [json.dumps(r[2]) for r in records],
        },
        schema=RAW_RECORD_SCHEMA,
    )


def orders_of(*bodies: dict[str, Any]) -> list[tuple[str, datetime | None, Any]]:
    """As the extractor lands them: id and update time (None when there is no usable one)."""
    fields = (api.ORDER_UPDATED_FIELDS, api.ORDER_COMPLETED_FIELDS + api.ORDER_CREATED_FIELDS)
    return [(str(b.get("id") or ""), record_time(b, *fields), b) for b in bodies]


class Load:
    """Land partitions for one entity and load them with the real loader into DuckDB."""

    def __init__(self, tmp_path: Path) -> None:
        self.landing = Landing(tmp_path / "landing")
        self.con = warehouse.connect(tmp_path / "w.duckdb")
        warehouse.migrate(self.con)

    def __call__(self, normaliser: Any, partition: str, records: list, **fields: Any) -> Any:
        self.landing.write("wj", normaliser.entity, partition, landed(records), **fields)
        return load_source(self.con, self.landing, normaliser, CTX)

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()


@pytest.fixture
def load(tmp_path: Path) -> Load:
    return Load(tmp_path)


ORDERS = WebjointOrdersNormaliser()
CUSTOMERS = WebjointCustomersNormaliser()
INVENTORY = WebjointInventoryNormaliser()


def test_a_complete_order_is_a_sale_with_items_store_and_local_day(load: Load) -> None:
    late = order(dateCompleted="2025-03-11T06:30:00Z", dateUpdated="2025-03-11T06:30:00Z")
    load(ORDERS, "2025-03-10", orders_of(late))
    (sale,) = load.rows(
        "SELECT sale_key, src_sale_id, persona_key, store_id, location_key, location_name, "
        "sold_at, sold_local_date, status, is_refund, subtotal, discount, tax, total, currency, "
        "item_count, order_type FROM core.sales"
    )
    assert sale == (
        "wj:1001", "1001", "wj:7", "midtown", "51", "Midtown",
        datetime(2025, 3, 11, 6, 30, tzinfo=UTC), date(2025, 3, 10),  # 22:30 in Los Angeles
        "completed", False, Decimal("50.0000"), Decimal("5.0000"), Decimal("6.8600"),
        Decimal("51.8600"), "USD", 2, "In-Store",
    )  # fmt: skip
    items = load.rows(
        "SELECT line_id, line_no, sku, product_id, quantity, unit_price, subtotal, discount, "
        "tax, total FROM core.sale_items ORDER BY line_no"
    )
    assert items == [
        ("1", 1, "WJ-1", "900001", Decimal(1), Decimal(30), Decimal(30), Decimal(5),
         Decimal("3.81"), Decimal(25)),
        ("2", 2, "900002", "900002", Decimal(2), Decimal(10), Decimal(20), Decimal(0),
         Decimal("3.05"), Decimal(20)),
    ]  # fmt: skip
    persona = load.rows("SELECT first_name, email, phone, _version FROM core.personas")
    assert persona[0][:3] == ("Ana", "ana@x.com", "+19162345678")
    assert persona[0][3].startswith("0|")  # lowest priority: customer records win


def test_statuses_other_than_complete_are_not_sales(load: Load) -> None:
    bodies = [
        order(1, status="Cancelled"),
        order(2, status="Pending", dateCompleted=None),
        order(3, status="In Progress"),
        order(4, status=None, customerId=None, customer=None),
    ]
    load(ORDERS, "2025-03-10", orders_of(*bodies))
    rows = load.rows(
        "SELECT src_sale_id, status, is_refund, persona_key FROM core.sales ORDER BY 1"
    )
    assert rows == [
        ("1", "cancelled", False, "wj:7"),
        ("2", "pending", False, "wj:7"),
        ("3", "in_progress", False, "wj:7"),
        ("4", "unknown", False, None),  # a guest: anonymous sale
    ]


def test_a_refunded_order_stays_a_sale_and_gets_a_refund_row(load: Load) -> None:
    refunded_at = T0 + timedelta(days=3)
    full = order(1, status="Refunded", refundAmount=51.86, dateUpdated=iso(refunded_at))
    partial = order(2, status="Partially Refunded", refundAmount=28.81,
                    dateUpdated=iso(refunded_at))  # fmt: skip
    load(ORDERS, "2025-03-13", orders_of(full, partial))
    rows = load.rows(
        "SELECT src_sale_id, status, is_refund, refunded_sale_id, sold_at, subtotal, tax, total "
        "FROM core.sales ORDER BY 1"
    )
    assert rows[0][:3] == ("1", "completed", False)
    assert rows[1] == (
        "1:refund", "refund", True, "1", refunded_at,
        Decimal("-50"), Decimal("-6.86"), Decimal("-51.86"),
    )  # fmt: skip
    share = Decimal("28.81") / Decimal("51.86")
    tax = (Decimal("6.86") * share).quantize(Decimal("0.01"))
    assert rows[3] == (
        "2:refund", "refund", True, "2", refunded_at,
        Decimal("-28.81") + tax, -tax, Decimal("-28.81"),
    )  # fmt: skip


def test_a_return_order_is_a_refund_with_negative_amounts_whatever_the_sign(load: Load) -> None:
    negative = order(5, orderType="Return", originalOrderId=1001, total=-51.86, subtotal=-50,
                     taxes=-6.86, discount=-5)  # fmt: skip
    negative["details"][0]["quantity"] = -1
    positive = order(6, orderType="Return", originalOrderId=1002)
    pending = order(7, orderType="Return", originalOrderId=1003, status="Pending")
    load(ORDERS, "2025-03-10", orders_of(negative, positive, pending))
    rows = load.rows(
        "SELECT src_sale_id, status, is_refund, refunded_sale_id, total, tax FROM core.sales "
        "ORDER BY 1"
    )
    assert rows == [
        ("5", "refund", True, "1001", Decimal("-51.86"), Decimal("-6.86")),
        ("6", "refund", True, "1002", Decimal("-51.86"), Decimal("-6.86")),
        ("7", "return_pending", False, "1003", Decimal("-51.86"), Decimal("-6.86")),
    ]
    quantities = load.rows("SELECT DISTINCT quantity < 0, total < 0 FROM core.sale_items")
    assert quantities == [(True, True)]


def test_the_newest_version_of_an_order_wins_in_and_across_partitions(load: Load) -> None:
    stale = order(1, status="Processing", dateUpdated=iso(T0))
    newer = order(1, status="Complete", dateUpdated=iso(T0 + timedelta(hours=1)))
    load(ORDERS, "2025-03-10", orders_of(newer, stale))  # one partition, any order
    assert load.rows("SELECT status FROM core.sales") == [("completed",)]
    load(ORDERS, "2025-03-09", orders_of(stale))  # an older copy in another partition
    assert load.rows("SELECT status FROM core.sales") == [("completed",)]
    refunded = order(1, status="Refunded", dateUpdated=iso(T0 + timedelta(days=2)))
    load(ORDERS, "2025-03-12", orders_of(refunded))
    assert load.rows("SELECT src_sale_id, status FROM core.sales ORDER BY 1") == [
        ("1", "completed"),
        ("1:refund", "refund"),
    ]


def test_bad_orders_are_quarantined_with_reasons_the_rest_load(load: Load) -> None:
    bad_total = order(2, total="N/A")
    bad_qty = order(3)
    bad_qty["details"][1]["quantity"] = "two"
    no_id = order(4, id=None)
    no_date = order(5, dateCreated=None, dateCompleted=None, dateUpdated=None)
    bad_date = order(6, dateUpdated="yesterday")
    report = load(ORDERS, "2025-03-10", orders_of(order(1), bad_total, bad_qty, no_id, no_date,
                                                  bad_date))  # fmt: skip
    assert report.quarantined == 5
    reasons = dict(load.rows("SELECT record_id, reason FROM ops.quarantine"))
    assert reasons == {
        "2": "total: not a number: 'N/A'",
        "3": "details.1.quantity: not a number: 'two'",
        None: "id: id is missing or empty",
        "5": "no order date (dateCompleted, dateCreated and dateUpdated all blank)",
        "6": "dateUpdated: not a timestamp: 'yesterday'",
    }
    assert load.rows("SELECT src_sale_id FROM core.sales") == [("1",)]
    # Re-landing the partition replaces its quarantine, never appends.
    load(ORDERS, "2025-03-10", orders_of(order(1), bad_total))
    assert load.rows("SELECT count(*) FROM ops.quarantine") == [(1,)]


def customer(cid: int = 7, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": cid,
        "firstName": "Ana",
        "lastName": "Lopez",
        "email": " ANA.lopez@Example.com ",
        "phone": "916-234-5678",
        "birthDate": "1990-01-02",
        "address": {"street": "1 Main St", "street2": "Apt 2", "city": "Sacramento",
                    "state": "CA", "zip": "95814"},
        "dateCreated": "2024-01-01T00:00:00.000Z",
        "dateUpdated": iso(T0),
    }  # fmt: skip
    body.update(overrides)
    return body


def customers_of(*bodies: dict[str, Any]) -> list[tuple[str, datetime | None, Any]]:
    return [(str(b["id"]), parse_stamp(b.get("dateUpdated")), b) for b in bodies]


def test_customers_become_clean_personas(load: Load) -> None:
    odd = customer(8, firstName=None, lastName=None, name="Lopez, Ana", phone="555-123-4567",
                   email="not-an-email", birthDate="N/A", address="9 Elm St")  # fmt: skip
    report = load(CUSTOMERS, "2025-03-10", customers_of(customer(), odd))
    rows = load.rows(
        "SELECT persona_key, source_type, src_id, first_name, last_name, email, phone, "
        "birth_date, postal_code, address, created_at, updated_at FROM core.personas ORDER BY 1"
    )
    assert rows[0] == (
        "wj:7", "webjoint", "7", "Ana", "Lopez", "ana.lopez@example.com", "+19162345678",
        date(1990, 1, 2), "95814", "1 Main St, Apt 2, Sacramento, CA 95814",
        datetime(2024, 1, 1, tzinfo=UTC), T0,
    )  # fmt: skip
    assert rows[1][3:10] == ("Ana", "Lopez", None, None, None, None, "9 Elm St")
    assert report.notes == {"invalid_phone": 1, "invalid_email": 1}


def test_a_customer_record_always_beats_the_persona_an_order_names(load: Load) -> None:
    load(ORDERS, "2025-03-09", orders_of(order(1)))  # names Ana with her phone
    load(CUSTOMERS, "2025-03-10", customers_of(customer(phone=None)))
    later = order(2, dateUpdated=iso(T0 + timedelta(days=30)))
    later["customer"] = {"id": 7, "firstName": "Annie", "email": "old@x.com"}
    load(ORDERS, "2025-04-09", orders_of(later))
    rows = load.rows("SELECT first_name, email, phone FROM core.personas")
    # The customer's fields win over any order's, even a later one; its blank phone keeps
    # what the earlier order said.
    assert rows == [("Ana", "ana.lopez@example.com", "+19162345678")]


def package(pid: int, rooms: list[tuple[int, str, float]], cost: float | None, **kw: Any) -> dict:
    return {
        "id": kw.pop("id", pid * 10),
        "productId": pid,
        "costPerItem": cost,
        "packageQuantities": [
            {"locationId": r, "location": {"name": name}, "quantity": q} for r, name, q in rooms
        ],
        **kw,
    }


def product(pid: int, variants: list[tuple[int, str | None, str, float]]) -> dict:
    return {
        "id": pid,
        "name": "Blue Dream",
        "type": "Flower",
        "brand": {"name": "Acme"},
        "category": {"name": "Flower"},
        "image": {"url": f"https://img/{pid}.jpg"},
        "variant": [{"productId": v, "sku": s, "unit": u, "price": p} for v, s, u, p in variants],
    }


def test_inventory_sums_rooms_splits_mapped_rooms_and_computes_margin(load: Load) -> None:
    prod = product(5001, [(900001, "BD-35", "3.5g", 40.0), (900002, None, "7g", 70.0)])
    record_51 = {
        "facility": {"id": "51", "name": "Midtown"},
        "product": prod,
        "packages": [
            package(900001, [(5101, "Sales Floor", 10), (5102, "Vault", 30)], 20.0, id=1),
            package(900001, [(5101, "Sales Floor", 10)], 16.0, id=2),
        ],
    }
    record_52 = {
        "facility": {"id": "52", "name": "Downtown"},
        "product": prod,
        "packages": [
            package(900001, [(5201, "Sales Floor", 5), (5202, "Vault", 7)], 18.0, id=3),
            package(900009, [(5202, "Vault", 1)], "lots", id=4),  # bad cost: quarantined
        ],
    }
    orphan = {  # stock of a product the facility does not list
        "facility": {"id": "51", "name": "Midtown"},
        "product": None,
        "product_id": "900077",
        "packages": [package(900077, [(5101, "Floor", 3)], 2.0)],
    }
    taken = "2025-03-14T10:00:00+00:00"
    report = load(
        INVENTORY,
        "2025-03-14",
        [("51:5001", None, record_51), ("52:5001", None, record_52), ("51:900077", None, orphan)],
        version=taken,
    )
    assert report.quarantined == 1
    rows = load.rows(
        "SELECT location_key, store_id, location_name, product_id, sku, quantity, unit_cost, "
        "unit_price, margin FROM core.inventory ORDER BY 1, 4"
    )
    assert rows == [
        # facility 51: both rooms summed; cost weighted by quantity (30*20 + 10*20 + 10*16)/50
        ("51", "midtown", "Midtown", "900001", "BD-35", Decimal(50), Decimal("19.2"),
         Decimal(40), Decimal("20.8")),
        ("51", "midtown", "Midtown", "900002", "900002", Decimal(0), None, Decimal(70), None),
        ("51", "midtown", "Midtown", "900077", "900077", Decimal(3), Decimal(2), None, None),
        # facility 52: its vault is a store of its own in the config
        ("52", None, "Downtown", "900001", "BD-35", Decimal(5), Decimal(18), Decimal(40),
         Decimal(22)),
        ("52", None, "Downtown", "900002", "900002", Decimal(0), None, Decimal(70), None),
        ("52/5202", "vault-store", "Downtown / Vault", "900001", "BD-35", Decimal(7),
         Decimal(18), Decimal(40), Decimal(22)),
        ("52/5202", "vault-store", "Downtown / Vault", "900002", "900002", Decimal(0), None,
         Decimal(70), None),
    ]  # fmt: skip
    products = load.rows("SELECT product_id, sku, name, brand, price, image_url FROM core.products")
    assert sorted(products) == [
        ("900001", "BD-35", "Blue Dream 3.5g", "Acme", Decimal(40), "https://img/5001.jpg"),
        ("900002", "900002", "Blue Dream 7g", "Acme", Decimal(70), "https://img/5001.jpg"),
    ]
    # A newer snapshot replaces the older one entirely (sold-out rows are not left behind).
    load(INVENTORY, "2025-03-15", [("51:5001", None, {**record_51, "packages": []})],
         version="2025-03-15T10:00:00+00:00")  # fmt: skip
    after = load.rows("SELECT location_key, product_id, quantity FROM core.inventory ORDER BY 2")
    assert after == [("51", "900001", Decimal(0)), ("51", "900002", Decimal(0))]


def test_facility_records_without_id_are_quarantined(load: Load) -> None:
    report = load(
        WebjointFacilitiesNormaliser(),
        "2025-03-14",
        [("51", None, {"id": 51, "name": "Midtown"}), ("", None, {"name": "Ghost"})],
    )
    assert report.rows_in == 2 and report.quarantined == 1


# ---------------------------------------------------------------------- reconstructed API bits


def test_date_params_cover_the_window_in_utc_and_local_days() -> None:
    # 2025-03-10 in Los Angeles is 07:00Z on the 10th to 07:00Z on the 11th.
    window = Window(datetime(2025, 3, 10, 7, tzinfo=UTC), datetime(2025, 3, 11, 7, tzinfo=UTC))
    assert api.date_params(window, "America/Los_Angeles") == {
        "dateFrom": "2025-03-10",
        "dateTo": "2025-03-11",
    }
    assert api.date_params(window, None) == {"dateFrom": "2025-03-10", "dateTo": "2025-03-11"}
    utc_day = Window(datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 11, tzinfo=UTC))
    assert api.date_params(utc_day, "UTC") == {"dateFrom": "2025-03-10", "dateTo": "2025-03-10"}


def test_range_and_bodies() -> None:
    assert api.range_value(0) == "[0,99]" and api.range_value(200, 50) == "[200,249]"
    assert api.rows_of([{"id": 1}, "junk"]) == [{"id": 1}]
    assert api.rows_of({"data": [{"id": 1}]}) == [{"id": 1}]
    assert api.rows_of(None) == []
    assert api.rows_of({"message": "nope"}) is None


def test_payload_parsing_is_tolerant_of_spellings_and_forms() -> None:
    body = {"id": 3.0, "updatedAt": 1741629600000, "createdAt": "2025-03-10 18:00:00",
            "taxes": [{"name": "excise", "amount": "1.50"}, {"name": "sales", "amount": 2}],
            "grandTotal": "$1,003.50", "type": "Return", "refundedOrderId": 9, "details": None,
            "extra": {"kept": True}}  # fmt: skip
    parsed = Order.model_validate(body)
    assert parsed.id == "3" and parsed.order_type == "Return" and parsed.original_order_id == "9"
    assert parsed.updated == datetime(2025, 3, 10, 18, tzinfo=UTC) == parsed.created
    assert parsed.taxes == Decimal("3.50") and parsed.total == Decimal("1003.50")
    assert parsed.details == [] and parsed.model_extra == {"extra": {"kept": True}}
    assert parse_money(49.6) == Decimal("49.6")
    with pytest.raises(ValueError):
        parse_money(True)


def test_newest_by_id_keeps_the_newest_copy_in_listing_order() -> None:
    with NewestById() as spool:
        spool.add("1", ("2025-01-01", "a"), None, {"id": 1, "v": "old"})
        spool.add("2", ("2025-01-01", "b"), None, {"id": 2})
        spool.add("1", ("2025-01-02", "c"), None, {"id": 1, "v": "new"})
        spool.add("1", ("2025-01-01", "a"), None, {"id": 1, "v": "old again"})
        spool.add(None, ("", ""), None, {"no": "id"})
        rows = [row for _, _, row in spool]
        assert spool.duplicates == 2
    assert rows == [{"id": 2}, {"id": 1, "v": "new"}, {"no": "id"}]

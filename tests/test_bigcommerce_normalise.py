"""BigCommerce normalisers on spec-example payloads (taken from the cassettes) and variations
of them: the status mapping, refunds, guests, money and dates, quarantine reasons, and the
loader hooks the connector relies on (inventory snapshots replace, store facts in sync_state,
unmapped stock locations reported) on a real DuckDB file."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from aiq_sync import warehouse
from aiq_sync.canonical import NormaliseContext
from aiq_sync.extract import RAW_RECORD_SCHEMA
from aiq_sync.landing import Landing, Manifest
from aiq_sync.loader import load_source
from connectors.bigcommerce import statuses
from connectors.bigcommerce.normalise import (
    CustomersNormaliser,
    InventoryNormaliser,
    OrdersNormaliser,
    StoreNormaliser,
)

CASSETTES = Path(__file__).parent / "cassettes" / "bigcommerce"
CTX = NormaliseContext("bc", "bigcommerce", "America/Chicago", {"1": "downtown"})


def recorded(cassette: str, path_part: str) -> Any:
    """The response body the cassette recorded for the first request whose URI has path_part."""
    for interaction in yaml.safe_load((CASSETTES / cassette).read_text())["interactions"]:
        if path_part in interaction["request"]["uri"]:
            return json.loads(interaction["response"]["body"]["string"])
    raise KeyError(path_part)


ORDERS = recorded("orders.yaml", "/v2/orders?")
REGISTERED, GUEST = ORDERS


def order(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(REGISTERED)
    body.update(changes)
    return body


def guest(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(GUEST)
    body.update(changes)
    return body


def manifest(entity: str, version: str = "2026-01-01T00:00:00.000000+00:00") -> Manifest:
    return Manifest(
        manifest_id="m1",
        source="bc",
        entity=entity,
        partition_key="2018-12-05",
        version=version,
        extracted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def table(payloads: list[Any], ids: list[str] | None = None) -> pa.Table:
    ids = ids or [str(p.get("id")) if isinstance(p, dict) else "x" for p in payloads]
    texts = [p if isinstance(p, str) else json.dumps(p) for p in payloads]
    return pa.table(
        {"id": ids, "modified_at": [None] * len(ids), "payload": texts}, schema=RAW_RECORD_SCHEMA
    )


def normalise_orders(*payloads: Any):
    return OrdersNormaliser().normalise(table(list(payloads)), manifest("orders"), CTX)


def sales(batch) -> dict[str, dict[str, Any]]:
    return {s["sale_key"]: s for s in batch.tables["core.sales"].to_pylist()}


# ------------------------------------------------------------------------------ statuses


@pytest.mark.parametrize(
    ("status_id", "expected"),
    [
        (0, "pending"), (1, "pending"), (2, "completed"), (3, "completed"), (4, "completed"),
        (5, "cancelled"), (6, "declined"), (7, "pending"), (8, "completed"), (9, "completed"),
        (10, "completed"), (11, "completed"), (12, "pending"), (13, "disputed"),
        (14, "completed"),
    ],
)  # fmt: skip
def test_every_status_maps_to_a_canonical_one(status_id: int, expected: str) -> None:
    assert statuses.STATUS_MAP[status_id][1] == expected
    assert sales(normalise_orders(order(status_id=status_id)))["bc:100"]["status"] == expected


def test_a_deleted_order_is_deleted_whatever_its_status() -> None:
    got = sales(normalise_orders(order(status_id=10, is_deleted=True)))
    assert got["bc:100"]["status"] == "deleted" and "bc:100:refund" not in got


def test_an_unknown_status_is_quarantined_naming_the_order_and_field() -> None:
    batch = normalise_orders(order(status_id=15), guest())
    assert list(sales(batch)) == ["bc:101", "bc:101:refund"]
    (reason,) = batch.quarantine["reason"].to_pylist()
    assert reason == "order 100: status_id: 15 is not a BigCommerce order status (0-14)"


def test_an_absurd_amount_is_quarantined_naming_the_order_and_field() -> None:
    batch = normalise_orders(order(total_inc_tax="100000000000000000.0000"), guest())
    assert list(sales(batch)) == ["bc:101", "bc:101:refund"]  # the good order still loads
    (reason,) = batch.quarantine["reason"].to_pylist()
    assert reason.startswith("order 100: total_inc_tax: ")
    assert "out of range" in reason


# ------------------------------------------------------------------------------- refunds


def test_a_full_refund_without_refunded_amount_refunds_the_total() -> None:
    got = sales(normalise_orders(order(status_id=4, refunded_amount="0.0000")))
    assert got["bc:100"]["status"] == "completed"
    refund = got["bc:100:refund"]
    assert refund["total"] == Decimal("-361.9500") and refund["tax"] == Decimal("0")
    assert refund["refunded_sale_id"] == "100" and refund["persona_key"] == "bc:20"


def test_a_partial_refund_without_amount_is_sized_from_refunded_lines() -> None:
    body = guest(refunded_amount="0.0000")
    batch = normalise_orders(body)
    items = body["consignments"]["pickups"][0]["line_items"]
    assert sales(batch)["bc:101:refund"]["total"] == -Decimal(items[0]["total_inc_tax"])


def test_the_refund_carries_its_pro_rata_tax() -> None:
    body = order(status_id=14, refunded_amount="100.0000", total_inc_tax="200.0000",
                 total_tax="20.0000")  # fmt: skip
    refund = sales(normalise_orders(body))["bc:100:refund"]
    assert (refund["total"], refund["tax"], refund["subtotal"]) == (
        Decimal("-100.0000"), Decimal("-10.0000"), Decimal("-90.0000"),
    )  # fmt: skip


def test_a_refund_on_an_order_that_is_not_a_sale_adds_no_refund_row() -> None:
    got = sales(normalise_orders(order(status_id=5, refunded_amount="361.9500")))
    assert list(got) == ["bc:100"]


def test_a_completed_order_with_a_refunded_amount_gets_a_refund_row() -> None:
    got = sales(normalise_orders(order(status_id=10, refunded_amount="10.0000")))
    assert got["bc:100:refund"]["total"] == Decimal("-10.0000")


def test_a_refund_never_exceeds_the_order_total() -> None:
    got = sales(normalise_orders(order(status_id=14, refunded_amount="9999.0000")))
    assert got["bc:100:refund"]["total"] == Decimal("-361.9500")


# ----------------------------------------------------------------------- money and dates


def test_money_stays_exact() -> None:
    body = order(total_inc_tax="0.1000", total_tax="0.2000", subtotal_ex_tax="1234567.8912")
    row = sales(normalise_orders(body))["bc:100"]
    assert row["total"] == Decimal("0.1000") and row["subtotal"] == Decimal("1234567.8912")


def test_rfc2822_offsets_are_honoured_and_local_day_follows_the_source() -> None:
    # 23:30 at -0400 is 03:30 UTC next day, 22:30 in Chicago on the first day.
    row = sales(normalise_orders(order(date_created="Thu, 20 Apr 2017 23:30:00 -0400")))["bc:100"]
    assert row["sold_at"] == datetime(2017, 4, 21, 3, 30, tzinfo=UTC)
    assert str(row["sold_local_date"]) == "2017-04-20"


def test_dates_are_compared_as_dates_not_text() -> None:
    # "Mon" < "Wed" as text, but Monday 31 Dec 2018 is after Wednesday 05 Dec 2018.
    older = order(date_modified="Wed, 05 Dec 2018 20:16:55 +0000", total_inc_tax="1.0000")
    newer = order(date_modified="Mon, 31 Dec 2018 08:00:00 +0000", total_inc_tax="2.0000")
    batch = normalise_orders(newer, older)
    versions = sorted(batch.tables["core.sales"].to_pylist(), key=lambda s: s["_version"])
    assert versions[-1]["total"] == Decimal("2.0000")


# ------------------------------------------------------------------------------- guests


def test_a_guest_without_email_is_keyed_by_phone() -> None:
    billing = {**GUEST["billing_address"], "email": "", "phone": "(512) 555-0199"}
    batch = normalise_orders(guest(billing_address=billing))
    assert sales(batch)["bc:101"]["persona_key"] == "bc:guest:+15125550199"
    (persona,) = batch.tables["core.personas"].to_pylist()
    assert persona["src_id"] == "guest:+15125550199" and persona["phone"] == "+15125550199"


def test_a_guest_without_contact_details_is_an_anonymous_sale() -> None:
    billing = {**GUEST["billing_address"], "email": "not-an-email", "phone": "555-123-4567"}
    batch = normalise_orders(guest(billing_address=billing))
    assert sales(batch)["bc:101"]["persona_key"] is None
    assert batch.tables["core.personas"].num_rows == 0
    assert batch.notes["guest_without_contact"] == 1


def test_a_guest_persona_keeps_the_newest_non_blank_fields() -> None:
    first = guest(id=201, date_modified="Wed, 05 Dec 2018 10:00:00 +0000")
    first["billing_address"] = {**GUEST["billing_address"], "phone": "512-555-0100"}
    second = guest(id=202, date_modified="Thu, 06 Dec 2018 10:00:00 +0000")
    second["billing_address"] = {**GUEST["billing_address"], "phone": "", "last_name": "Roe"}
    (persona,) = normalise_orders(second, first).tables["core.personas"].to_pylist()
    assert persona["last_name"] == "Roe" and persona["phone"] == "+15125550100"


# ---------------------------------------------------------------------------- quarantine


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"date_created": "yesterday"},
            "order 100: date_created: 'yesterday' is not an RFC-2822 date",
        ),
        ({"total_inc_tax": "12,00"}, "order 100: total_inc_tax: '12,00' is not an amount"),
        ({"id": "abc"}, "order abc: id: Input should be a valid integer"),
    ],
)
def test_bad_orders_are_quarantined_with_id_and_field(change: dict, reason: str) -> None:
    body = order(**change)
    batch = OrdersNormaliser().normalise(
        table([body, GUEST], ids=[str(body["id"]), "101"]), manifest("orders"), CTX
    )
    assert batch.quarantine["reason"].to_pylist()[0].startswith(reason)
    assert "bc:101" in sales(batch)


def test_a_bad_line_item_is_named_by_its_id() -> None:
    body = order()
    body["consignments"]["shipping"][0]["line_items"][1]["quantity"] = "lots"
    batch = normalise_orders(body)
    (reason,) = batch.quarantine["reason"].to_pylist()
    assert reason.startswith("order 100: consignments.shipping.0.line item 66.quantity: ")
    assert batch.tables["core.sales"].num_rows == 0


def test_an_unparseable_payload_is_quarantined() -> None:
    batch = OrdersNormaliser().normalise(
        table(['{"id": 7, "date_'], ids=["7"]), manifest("orders"), CTX
    )
    assert batch.quarantine["reason"].to_pylist() == ["order 7: payload is not valid JSON"]


def test_new_api_fields_never_break_a_sync() -> None:
    body = order(brand_new_field={"nested": [1, 2]}, another="x")
    body["consignments"]["shipping"][0]["line_items"][0]["surprise"] = True
    assert normalise_orders(body).quarantine.num_rows == 0


# ----------------------------------------------------------------------------- customers


def test_a_customer_without_a_valid_phone_takes_one_from_an_address() -> None:
    customer = recorded("customers.yaml", "/v3/customers")["data"][0]
    customer["phone"] = ""
    customer["addresses"] = [
        {**customer["addresses"][0], "id": 2, "phone": "+1 (303) 555-0182"},
        {**customer["addresses"][0], "id": 1, "phone": "n/a"},
    ]
    batch = CustomersNormaliser().normalise(table([customer]), manifest("customers"), CTX)
    (persona,) = batch.tables["core.personas"].to_pylist()
    assert persona["phone"] == "+13035550182" and persona["src_id"] == "1"
    assert persona["updated_at"] == datetime(2018, 12, 5, 14, 49, 5, tzinfo=UTC)


# ------------------------------------------------------------- loader hooks on real DuckDB


def _inventory(locations: dict[int, int]) -> list[Any]:
    """Inventory records: one item per variant id, stocked in each location given."""
    out: list[Any] = [{"id": 2, "code": "B2", "label": "Austin Store", "enabled": True}]
    for variant, location in locations.items():
        out.append(
            {
                "identity": {"sku": f"S-{variant}", "variant_id": variant, "product_id": 9},
                "locations": [
                    {"location_id": location, "available_to_sell": variant, "location_name": "L"}
                ],
            }
        )
    return out


def _land(landing: Landing, entity: str, day: str, version: str, payloads: list[Any]) -> None:
    ids = [
        f"location:{p['id']}" if "code" in p else f"item:{p['identity']['variant_id']}"
        if "identity" in p else str(p.get("id"))
        for p in payloads
    ]  # fmt: skip
    landing.write("bc", entity, day, table(payloads, ids), version=version)


def test_inventory_is_replaced_by_each_newer_snapshot(tmp_path: Path) -> None:
    landing = Landing(tmp_path / "landing")
    inventory = InventoryNormaliser()
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:

        def load(day: str, version: str, payloads: list[Any]) -> list[tuple]:
            _land(landing, "inventory", day, version, payloads)
            load_source(con, landing, inventory, CTX)
            return con.execute(
                "SELECT product_id, location_key, store_id, quantity FROM core.inventory "
                "ORDER BY product_id"
            ).fetchall()

        first = load("2026-01-01", "2026-01-01T03:00:00.000000+00:00", _inventory({1: 1, 2: 2}))
        assert first == [("9:1", "1", "downtown", Decimal(1)), ("9:2", "2", None, Decimal(2))]
        unmapped = con.execute(
            "SELECT location_key, location_name, sales_count FROM ops.unmapped_locations"
        ).fetchall()
        assert unmapped == [("2", "Austin Store", 0)]
        # Variant 2 was sold out of the catalogue: the next snapshot no longer has it.
        second = load("2026-01-02", "2026-01-02T03:00:00.000000+00:00", _inventory({1: 1}))
        assert second == [("9:1", "1", "downtown", Decimal(1))]
        # A snapshot whose every item is bad is not a picture of the store: keep the last one.
        bad = [{"identity": {"variant_id": "x"}, "locations": []}]
        third = load("2026-01-03", "2026-01-03T03:00:00.000000+00:00", bad)
        assert third == second
        assert con.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0] == 1


def test_the_store_time_zone_is_recorded_in_sync_state(tmp_path: Path) -> None:
    landing = Landing(tmp_path / "landing")
    store = recorded("store.yaml", "/v2/store")
    landing.write("bc", "store", "2026-01-01", table([store]), version="v1")
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        load_source(con, landing, StoreNormaliser(), CTX)
        assert warehouse.get_state(con, "bc", "store", "timezone") == "America/Chicago"
        assert warehouse.get_state(con, "bc", "store", "plan_level") == "Standard"


def test_v2_dates_parse_the_same_on_the_fast_path_as_with_email_utils() -> None:
    """BigCommerce's own date shape skips email.utils; every other shape still reaches it,
    and both give the same instant and offset."""
    import email.utils
    import random
    from datetime import timedelta, timezone

    from connectors.bigcommerce.models import _fast_rfc2822, parse_rfc2822

    rng = random.Random(3)
    for _ in range(5_000):
        moment = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**9))
        offset = timedelta(minutes=rng.choice([0, -300, 330, -480, 60, -210, 845]))
        text = email.utils.format_datetime(moment.astimezone(timezone(offset)))
        fast = _fast_rfc2822(text)
        assert fast is not None, text
        assert (fast, fast.utcoffset()) == (moment, offset), text
    # Other shapes take the general path and keep its answers (and its errors).
    assert parse_rfc2822("Wed, 10 Jan 18 21:05:30 +0000") == datetime(
        2018, 1, 10, 21, 5, 30, tzinfo=UTC
    )
    assert parse_rfc2822("Wed, 10 Jan 2018 21:05:30 -0000") == datetime(
        2018, 1, 10, 21, 5, 30, tzinfo=UTC
    )
    assert parse_rfc2822("10 Jan 2018 16:05:30 -0500") == datetime(
        2018, 1, 10, 21, 5, 30, tzinfo=UTC
    )
    for bad in ("Wed, 31 Feb 2018 21:05:30 +0000", "Wed, 10 Jan 2018 21:05:30 +2400", "yesterday"):
        assert _fast_rfc2822(bad) is None
        with pytest.raises(ValueError, match="is not an RFC-2822 date"):
            parse_rfc2822(bad)

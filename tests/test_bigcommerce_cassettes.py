"""BigCommerce connector against vcrpy cassettes built from the official spec examples
(tests/cassettes/bigcommerce/record.py re-records them): the exact requests each code path sends
(strict matching on method, URL with query, and body), parsing of the examples, and no secret
in any cassette. Every recorded request is also checked against the OpenAPI specs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import vcr
import yaml

from aiq_sync.canonical import NormaliseContext
from aiq_sync.extract import RAW_RECORD_SCHEMA, RawRecord
from aiq_sync.landing import Manifest
from connectors.bigcommerce import BigCommerceConnector
from connectors.bigcommerce.check import check
from connectors.bigcommerce.client import open_client
from connectors.bigcommerce.contact_sync import ContactSyncPlan, push_contacts
from connectors.bigcommerce.extract import PagingError
from connectors.bigcommerce.normalise import (
    CustomersNormaliser,
    InventoryNormaliser,
    OrdersNormaliser,
    ProductsNormaliser,
    StoreNormaliser,
)
from tests.cassettes.bigcommerce.record import (
    CANDIDATES,
    LIVE_HOST,
    MATCH_ON,
    RECORDING_TOKEN,
    STORE_HASH,
    TOKEN_ENV,
    WINDOW,
    Stub,
    source,
)
from tests.cassettes.bigcommerce.spec_check import request_problems, spec_dir

CASSETTES = Path(__file__).parent / "cassettes" / "bigcommerce"
TOKEN = "tok_REPLAY_5ecr3t_do_not_log"
REPLAY = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",  # never the network
    match_on=MATCH_ON,
    filter_headers=["X-Auth-Token"],
)
CTX = NormaliseContext("bc", "bigcommerce", "America/Chicago", {"1": "downtown"})


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def bc():
    return source(f"{LIVE_HOST}/stores/{STORE_HASH}/v3/")


def cassette_files() -> list[Path]:
    return sorted(CASSETTES.glob("*.yaml"))


def replay_extract(bc, name: str, entity: str, window=WINDOW) -> list[RawRecord]:
    with REPLAY.use_cassette(f"{name}.yaml") as cassette:
        with BigCommerceConnector().open(bc) as extractors:
            records = [r for page in extractors[entity].extract(window) for r in page]
        assert cassette.all_played, f"{name}: the connector skipped recorded requests"
    return records


def manifest(entity: str) -> Manifest:
    return Manifest(
        manifest_id="m1",
        source="bc",
        entity=entity,
        partition_key="2018-12-05",
        version="2026-01-01T00:00:00.000000+00:00",
        extracted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def raw_table(records: list[RawRecord]) -> pa.Table:
    return pa.table(
        {
            "id": [r.id for r in records],
            "modified_at": [r.modified_at for r in records],
            "payload": [json.dumps(r.payload) for r in records],
        },
        schema=RAW_RECORD_SCHEMA,
    )


def rows(batch: Any, table: str) -> list[dict[str, Any]]:
    return batch.tables[table].to_pylist()


# ----------------------------------------------------------------------------- cassettes


def test_no_secret_in_any_cassette() -> None:
    files = cassette_files()
    assert len(files) >= 10
    for path in files:
        text = path.read_text()
        assert RECORDING_TOKEN not in text, path.name
        assert "x-auth-token" not in text.lower(), path.name
        for interaction in yaml.safe_load(text)["interactions"]:
            headers = {k.lower() for k in interaction["request"]["headers"]}
            assert "x-auth-token" not in headers


@pytest.mark.skipif(spec_dir() is None, reason="BigCommerce reference specs not found")
def test_every_recorded_request_is_valid_against_the_specs() -> None:
    checked = 0
    for path in cassette_files():
        for interaction in yaml.safe_load(path.read_text())["interactions"]:
            request = interaction["request"]
            body = json.loads(request["body"]) if request["body"] else None
            assert request_problems(request["method"], request["uri"], body) == [], path.name
            checked += 1
    assert checked >= 30


@pytest.mark.skipif(spec_dir() is None, reason="BigCommerce reference specs not found")
def test_the_spec_check_catches_invalid_requests() -> None:
    base = f"{LIVE_HOST}/stores/{STORE_HASH}"
    assert request_problems("GET", f"{base}/v2/orders?limit=500")
    assert request_problems("GET", f"{base}/v3/catalog/products?date_modified:min=2024-01-01")
    assert request_problems("GET", f"{base}/v2/orders?is_archived=true")
    assert request_problems("GET", f"{base}/v2/orders?sort=total:asc")
    assert request_problems("POST", f"{base}/v3/customers", [{"email": "a@b.co"}])
    assert not request_problems(
        "GET", f"{base}/v2/orders/count?min_date_modified=2024-01-01T00:00:00Z"
    )


# -------------------------------------------------------------------------------- orders


def test_orders_come_with_their_line_items_in_one_request(bc) -> None:
    records = replay_extract(bc, "orders", "orders")
    assert [r.id for r in records] == ["100", "101"]
    # RFC-2822 parsed into an aware datetime, never compared as text
    assert records[0].modified_at == datetime(2018, 12, 5, 20, 16, 55, tzinfo=UTC)
    batch = OrdersNormaliser().normalise(raw_table(records), manifest("orders"), CTX)
    assert batch.quarantine.num_rows == 0
    sales = {s["sale_key"]: s for s in rows(batch, "core.sales")}
    registered = sales["bc:100"]
    assert registered["persona_key"] == "bc:20"
    assert registered["status"] == "completed"  # 11 Awaiting Fulfillment: paid
    assert registered["sold_at"] == datetime(2018, 1, 10, 21, 5, 30, tzinfo=UTC)
    assert str(registered["sold_local_date"]) == "2018-01-10"  # 15:05 in Chicago
    assert registered["total"] == Decimal("361.9500") and registered["tax"] == Decimal("0")
    assert registered["subtotal"] == Decimal("336.3200")
    assert registered["location_key"] is None and registered["order_type"] == "shipping"
    assert registered["item_count"] == 2
    guest = sales["bc:101"]
    assert guest["persona_key"] == "bc:guest:janedoe@example.com"
    assert (guest["location_key"], guest["store_id"]) == ("1", "downtown")
    assert guest["location_name"] == "Location 1" and guest["order_type"] == "pickup"
    assert guest["status"] == "completed"  # 14 Partially Refunded stays a sale
    refund = sales["bc:101:refund"]
    assert refund["is_refund"] and refund["status"] == "refund"
    assert refund["refunded_sale_id"] == "101" and refund["total"] == Decimal("-65.2300")
    assert refund["sold_at"] == datetime(2018, 12, 5, 20, 16, 55, tzinfo=UTC)
    items = rows(batch, "core.sale_items")
    assert sorted((i["sale_key"], i["line_id"]) for i in items) == [
        ("bc:100", "65"), ("bc:100", "66"), ("bc:101", "67"), ("bc:101", "68"),
    ]  # fmt: skip
    first = next(i for i in items if i["line_id"] == "65")
    assert first["product_id"] == "77" and first["sku"] == "S-ORAN"
    assert first["unit_price"] == Decimal("55.9900") and first["discount"] == Decimal("1.5900")
    assert first["total"] == Decimal("54.4000") and first["brand"] == "BigCommerce"
    persona = rows(batch, "core.personas")[0]
    assert persona["persona_key"] == "bc:guest:janedoe@example.com"
    assert persona["first_name"] == "Jane" and persona["postal_code"] == "78751"
    assert persona["phone"] is None  # 555-123-4567 is not a valid number
    assert batch.tables["core.sales"].schema.field("total").type == pa.decimal128(18, 4)


def test_incomplete_embedded_line_items_are_fetched_per_order(bc) -> None:
    records = replay_extract(bc, "orders_line_item_fallback", "orders")
    assert [len(r.payload["_line_items"]) for r in records] == [2]
    batch = OrdersNormaliser().normalise(raw_table(records), manifest("orders"), CTX)
    assert len(rows(batch, "core.sale_items")) == 2


def test_204_ends_the_orders_paging(bc) -> None:
    assert replay_extract(bc, "orders_204", "orders") == []


def test_a_page_that_repeats_stops_the_paging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that ignores `page`: the same full page of one timestamp comes back forever."""
    recorded = json.loads(
        yaml.safe_load((CASSETTES / "orders.yaml").read_text())["interactions"][1]["response"][
            "body"
        ]["string"]
    )[0]
    page = [{**recorded, "id": i} for i in range(1, 251)]
    stub = Stub()
    stub.script((200, {"count": 250}), *[(200, page)] * 5)
    try:
        src = source(f"{stub.base}/stores/{STORE_HASH}/v3/")
        with BigCommerceConnector().open(src) as extractors, pytest.raises(PagingError) as err:
            for _ in extractors["orders"].extract(WINDOW):
                pass
        assert "repeats the previous page" in str(err.value)
        assert len(stub.replies) == 3  # count, page 1, page 2 (the repeat): then it stopped
    finally:
        stub.server.shutdown()


# --------------------------------------------------------------- other entities and check


def test_customers_with_addresses(bc) -> None:
    records = replay_extract(bc, "customers", "customers")
    assert records[0].modified_at == datetime(2018, 12, 5, 14, 49, 5, tzinfo=UTC)
    batch = CustomersNormaliser().normalise(raw_table(records), manifest("customers"), CTX)
    (persona,) = rows(batch, "core.personas")
    assert persona["persona_key"] == "bc:1" and persona["email"] == "jane.smith@example.com"
    assert persona["address"] == "Addr1, string, string, st" and persona["phone"] is None
    assert batch.notes["invalid_phone"] == 1


def test_products_become_one_row_per_variant(bc) -> None:
    records = replay_extract(bc, "products", "products")
    batch = ProductsNormaliser().normalise(raw_table(records), manifest("products"), CTX)
    products = {p["product_id"]: p for p in rows(batch, "core.products")}
    assert set(products) >= {"192:382", "192:383"}
    assert products["192:382"]["sku"] == "SMIT" and products["192:382"]["price"] == Decimal(10)
    assert products["192:383"]["price"] == Decimal(25)
    assert products["192:382"]["name"] == "Smith Journal 13"


def test_inventory_items_and_locations_are_one_snapshot(bc) -> None:
    records = replay_extract(bc, "inventory", "inventory", None)
    assert [r.id for r in records] == ["location:2", "item:79"]
    batch = InventoryNormaliser().normalise(raw_table(records), manifest("inventory"), CTX)
    (row,) = rows(batch, "core.inventory")
    assert row["product_id"] == "120:79" and row["location_key"] == "1"
    assert row["store_id"] == "downtown" and row["quantity"] == Decimal(10)
    assert row["location_name"] == "Default location"
    assert batch.snapshots == {"core.inventory": manifest("inventory").version}


def test_store_facts_go_to_sync_state(bc) -> None:
    records = replay_extract(bc, "store", "store", None)
    batch = StoreNormaliser().normalise(raw_table(records), manifest("store"), CTX)
    assert batch.state["timezone"] == "America/Chicago" and batch.state["currency"] == "USD"


def test_check_passes_with_every_scope(bc) -> None:
    with REPLAY.use_cassette("check_ok.yaml") as cassette:
        problems = check(source(bc.api_path, sync_contacts=True), timezone="America/Chicago")
        assert cassette.all_played
    assert problems == []


def test_check_names_each_missing_scope_and_never_the_token(bc) -> None:
    with REPLAY.use_cassette("check_missing_scopes.yaml"):
        problems = check(source(bc.api_path, sync_contacts=True), timezone="America/Chicago")
    assert len(problems) == 3
    for problem, scope in zip(
        problems, ("Orders Read", "Store Locations Read", "Customers Write"), strict=True
    ):
        assert problem.startswith("sources[bc]: ") and f"'{scope}'" in problem
    assert TOKEN not in " ".join(problems)


def test_check_reports_a_time_zone_that_differs_from_the_store(bc) -> None:
    with REPLAY.use_cassette("check_ok.yaml"):
        problems = check(source(bc.api_path, sync_contacts=True), timezone="America/Denver")
    assert problems == [
        "sources[bc].timezone: the store's time zone is America/Chicago (GET /v2/store) but the "
        "source is synced in America/Denver; set timezone: America/Chicago so days and rule "
        "dates match the store's"
    ]


def test_check_of_a_frozen_source_makes_no_request(bc) -> None:
    with REPLAY.use_cassette("store.yaml", allow_playback_repeats=True) as cassette:
        assert check(source(bc.api_path, freeze=True)) == []
        assert cassette.play_count == 0


# ---------------------------------------------------------------------------- contacts


def _plan() -> ContactSyncPlan:
    return ContactSyncPlan("bc", WINDOW.start.date(), to_create=list(CANDIDATES))


def test_contacts_are_created_in_one_batch(bc) -> None:
    with REPLAY.use_cassette("contacts_create.yaml") as cassette, open_client(bc) as client:
        report = push_contacts(client, _plan())
        assert cassette.all_played
    assert report.created == [("drops:C1", 7), ("drops:C2", 8)]
    assert report.rejected == [] and report.error is None and report.requests == 2


def test_a_422_is_reported_for_its_record_and_the_others_are_created(bc) -> None:
    with REPLAY.use_cassette("contacts_422.yaml") as cassette, open_client(bc) as client:
        report = push_contacts(client, _plan())
        assert cassette.all_played
    assert report.created == [("drops:C1", 7)]
    ((key, why, _),) = report.rejected
    assert key == "drops:C2" and "Create customers failed" in why
    assert report.as_metadata()["rejections"] == [f"drops:C2: {why}"]


def test_a_dry_run_posts_nothing(bc) -> None:
    # Only the e-mail lookup of the recorded conversation happens; the POST would not match.
    with REPLAY.use_cassette("contacts_create.yaml") as cassette, open_client(bc) as client:
        report = push_contacts(client, _plan(), dry_run=True)
        assert cassette.play_count == 1
    assert [c.persona_key for c in report.would_create] == ["drops:C1", "drops:C2"]
    assert report.created == []


def _all_requests() -> Iterator[dict[str, Any]]:
    for path in cassette_files():
        yield from (i["request"] for i in yaml.safe_load(path.read_text())["interactions"])


def test_every_list_request_asks_for_250_rows() -> None:
    for request in _all_requests():
        uri = request["uri"]
        if "page=" in uri:
            assert "limit=250" in uri, uri

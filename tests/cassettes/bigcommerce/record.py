"""Re-record the BigCommerce cassettes from the official spec examples.

    .venv/bin/python -m tests.cassettes.bigcommerce.record

Each scenario serves example bodies from the official specs (`bigcommerce/examples/*.json` and
the `example` values of the spec schemas) from a loopback stub, runs the real connector against
it under vcrpy, and records what the connector sends: the `X-Auth-Token` header is filtered
out (`filter_headers`) and the stub's host is rewritten to `https://api.bigcommerce.com`. The
tests replay them with strict matching (method, URL with query, body), so a change in the
request shape fails a test until the cassettes are re-recorded and reviewed.

Consistency fixes applied to the examples (they are independent snippets): example order
products get the order's id and `items_total` their quantity sum; consignment examples carry
the example order products instead of links; the customer and product examples get an `id`
and dates (the POST/GET examples omit them); the product gets the variants example's id;
pagination metadata describes the one page served.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import vcr
import yaml

from aiq_sync.config import BigCommerceSource, parse_config
from aiq_sync.extract import Window
from connectors.bigcommerce import BigCommerceConnector
from connectors.bigcommerce.check import check
from connectors.bigcommerce.client import open_client
from connectors.bigcommerce.contact_sync import Candidate, ContactSyncPlan, push_contacts
from tests.cassettes.bigcommerce.spec_check import request_problems, spec_dir

HERE = Path(__file__).resolve().parent
STORE_HASH = "abc123"
LIVE_HOST = "https://api.bigcommerce.com"
RECORDING_TOKEN = "cassette-recording-token-7f3a"
TOKEN_ENV = "BC_CASSETTE_TOKEN"
WINDOW = Window(datetime(2018, 12, 5, tzinfo=UTC), datetime(2018, 12, 6, tzinfo=UTC))
RATE_HEADERS = {
    "X-Rate-Limit-Time-Window-Ms": "30000",
    "X-Rate-Limit-Time-Reset-Ms": "29000",
    "X-Rate-Limit-Requests-Quota": "150",
    "X-Rate-Limit-Requests-Left": "149",
}
MATCH_ON = ("method", "scheme", "host", "port", "path", "query", "body")


def source(api_path: str, **overrides: Any) -> BigCommerceSource:
    raw = {
        "name": "bc",
        "type": "bigcommerce",
        "api_path": api_path,
        "access_token_env": TOKEN_ENV,
        "timezone": "America/Chicago",
        "max_concurrency": 1,
        **overrides,
    }
    config = parse_config({"sources": [raw]})
    found = config.sources[0]
    assert isinstance(found, BigCommerceSource)
    return found


# ------------------------------------------------------------------------------- examples


def _examples() -> Path:
    folder = spec_dir()
    assert folder is not None, "the BigCommerce reference is needed to record"
    return folder.parent / "examples"


def example(name: str) -> Any:
    return json.loads((_examples() / name).read_text())


def spec_example(spec_name: str, *path: str) -> Any:
    node: Any = yaml.safe_load((_examples().parent / "spec" / spec_name).read_text())
    for part in path:
        node = node[part]
    return copy.deepcopy(node)


def _synth(spec: dict[str, Any], node: Any) -> Any:
    """A body from the `example` values of a schema's properties."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    if not isinstance(node, dict):
        return node
    if "example" in node:
        return node["example"]
    if "allOf" in node:
        out: dict[str, Any] = {}
        for sub in node["allOf"]:
            value = _synth(spec, sub)
            if isinstance(value, dict):
                out.update(value)
        return out
    if node.get("type") == "array":
        return [_synth(spec, node.get("items", {}))]
    if node.get("type") == "object" or "properties" in node:
        return {k: _synth(spec, v) for k, v in node.get("properties", {}).items()}
    return {"string": "", "integer": 0, "number": 0, "boolean": False}.get(node.get("type", ""))


def response_example(spec_name: str, path: str) -> Any:
    spec = yaml.safe_load((_examples().parent / "spec" / spec_name).read_text())
    schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return _synth(spec, schema["schema"])


def one_page(data: list[Any]) -> dict[str, Any]:
    pagination = {"total": len(data), "count": len(data), "per_page": 250, "current_page": 1}
    pagination |= {"total_pages": 1, "links": {"current": "?page=1&limit=250"}}
    return {"data": data, "meta": {"pagination": pagination}}


def order_products(order_id: int, first_id: int) -> list[dict[str, Any]]:
    items = example("orders__GET__orders_order_id_products__200__response.json")
    for k, item in enumerate(items):
        item["order_id"] = order_id
        item["id"] = first_id + k
    return items


def consignment(kind: str, items: Any) -> dict[str, Any]:
    examples = spec_example(
        "orders.v2.oas2.yml", "components", "schemas", "orderConsignment_Get", "x-examples"
    )
    body = examples[f"order with {kind} consignments"]
    group = body["pickups" if kind == "pickup" else "shipping"][0]
    group["line_items"] = items
    return body


def registered_order() -> dict[str, Any]:
    order = example("orders__GET__orders__200__response.json")[0]
    items = order_products(order["id"], 65)
    order["items_total"] = sum(i["quantity"] for i in items)
    order["consignments"] = consignment("shipping", items)
    return order


def guest_pickup_order() -> dict[str, Any]:
    """The example order as a guest's pickup order, partially refunded (one line back)."""
    order = example("orders__GET__orders__200__response.json")[0]
    order["id"], order["customer_id"] = 101, 0
    order["status_id"], order["status"] = 14, "Partially Refunded"
    items = order_products(101, 67)
    items[0]["is_refunded"], items[0]["quantity_refunded"] = True, items[0]["quantity"]
    order["refunded_amount"] = items[0]["total_inc_tax"]
    order["items_total"] = sum(i["quantity"] for i in items)
    order["consignments"] = consignment("pickup", items)
    return order


def linked_order() -> dict[str, Any]:
    """Consignments as the spec example gives them: line items as links, not embedded."""
    order = example("orders__GET__orders__200__response.json")[0]
    order["items_total"] = 2
    order["consignments"] = consignment(
        "shipping", [{"url": f"{LIVE_HOST}/v2/orders/100/products/65", "resource": "/x"}]
    )
    return order


def customer() -> dict[str, Any]:
    body = example("customers__GET__customers__200__example_1.json")
    record = body["data"][0]
    record |= {"id": 1, "date_created": "2018-12-05T14:49:05Z"}
    record["date_modified"] = "2018-12-05T14:49:05Z"
    return {"data": [record], "meta": one_page([record])["meta"]}


def product() -> dict[str, Any]:
    spec = yaml.safe_load((_examples().parent / "spec" / "products_catalog.v3.yml").read_text())
    response = spec["paths"]["/catalog/products"]["post"]["responses"]["200"]
    while "$ref" in response:
        target: Any = spec
        for part in response["$ref"].lstrip("#/").split("/"):
            target = target[part]
        response = target
    record = copy.deepcopy(response["content"]["application/json"]["example"])
    variants = example("product-variants_catalog__GET__catalog_products_product_id_variants__200"
                       "__example.json")["data"]  # fmt: skip
    record |= {"id": variants[0]["product_id"], "price": 10, "calculated_price": 10}
    record |= {"date_created": "2018-01-10T21:05:30+00:00"}
    record |= {"date_modified": "2018-12-05T20:16:55+00:00", "variants": variants}
    return one_page([record])


def created_customers(payloads: list[dict[str, Any]], first_id: int) -> dict[str, Any]:
    template = example("customers__POST__customers__200__example_1.json")["data"][0]
    data = []
    for k, sent in enumerate(payloads):
        data.append({**template, **sent, "id": first_id + k, "addresses": []})
    return {"data": data, "meta": {}}


def error(status: int, v2: bool, title: str) -> Any:
    if v2:
        return [{"status": status, "message": title}]
    return {
        "status": status,
        "title": title,
        "type": "/api-docs/getting-started/api-status-codes",
    }


# ---------------------------------------------------------------------------------- stub

Reply = tuple[int, Any]


class Stub:
    """Answers each request with the next scripted reply (the scenario knows the order)."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with stub.lock:
                    status, body = stub.replies.popleft()
                raw = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in RATE_HEADERS.items():
                    self.send_header(name, value)
                if status != 204:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if status != 204:
                    self.wfile.write(raw)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def script(self, *replies: Reply) -> None:
        self.replies = deque(replies)


# ----------------------------------------------------------------------------- scenarios


def _extract(src: BigCommerceSource, entity: str, window: Window | None = WINDOW) -> None:
    with BigCommerceConnector().open(src) as extractors:
        for _ in extractors[entity].extract(window):
            pass


CANDIDATES = [
    Candidate("drops:C1", "drops", "jane.smith@example.com", "+15125550101", "Jane", "Smith", None),
    Candidate("drops:C2", "drops", "raj.patel@example.com", None, "Raj", "Patel", None),
]


def _push(src: BigCommerceSource) -> None:
    plan = ContactSyncPlan("bc", WINDOW.start.date(), to_create=list(CANDIDATES))
    with open_client(src) as client:
        push_contacts(client, plan)


def scenarios() -> dict[str, tuple[list[Reply], Callable[[BigCommerceSource], None]]]:
    """Built on demand: importing this module (the tests do) needs no reference files."""
    return {
        "orders": (
            [(200, {"count": 2}), (200, [registered_order(), guest_pickup_order()])],
            lambda s: _extract(s, "orders"),
        ),
        "orders_line_item_fallback": (
            [
                (200, {"count": 1}),
                (200, [linked_order()]),
                (200, order_products(100, 65)),
            ],
            lambda s: _extract(s, "orders"),
        ),
        "orders_204": ([(200, {"count": 3}), (204, None)], lambda s: _extract(s, "orders")),
        "customers": ([(200, customer())], lambda s: _extract(s, "customers")),
        "products": ([(200, product())], lambda s: _extract(s, "products")),
        "inventory": (
            [
                (200, response_example("locations.v3.yml", "/inventory/locations")),
                (200, response_example("inventory.v3.yml", "/inventory/items")),
            ],
            lambda s: _extract(s, "inventory", None),
        ),
        "store": (
            [(200, example("store_information__GET__store__200__response.json"))],
            lambda s: _extract(s, "store", None),
        ),
        "check_ok": (
            [
                (200, example("store_information__GET__store__200__response.json")),
                (200, customer()),
                (200, [registered_order()]),
                (200, product()),
                (200, response_example("inventory.v3.yml", "/inventory/items")),
                (200, response_example("locations.v3.yml", "/inventory/locations")),
                (200, {"data": [], "meta": {}}),
            ],
            lambda s: _check(s, sync_contacts=True),
        ),
        "check_missing_scopes": (
            [
                (200, example("store_information__GET__store__200__response.json")),
                (200, customer()),
                (
                    403,
                    error(403, True, "You don't have a required scope to access the endpoint"),
                ),
                (200, product()),
                (200, response_example("inventory.v3.yml", "/inventory/items")),
                (
                    403,
                    error(403, False, "You don't have a required scope to access the endpoint"),
                ),
                (
                    403,
                    error(403, False, "You don't have a required scope to access the endpoint"),
                ),
            ],
            lambda s: _check(s, sync_contacts=True),
        ),
        "contacts_create": (
            [
                (200, {"data": [], "meta": one_page([])["meta"]}),
                (200, created_customers([c.payload() for c in CANDIDATES], 7)),
            ],
            _push,
        ),
        "contacts_422": (
            [
                (200, {"data": [], "meta": one_page([])["meta"]}),
                (422, example("customers__POST__customers__422__response.json")),
                (200, created_customers([CANDIDATES[0].payload()], 7)),
                (422, example("customers__POST__customers__422__response.json")),
            ],
            _push,
        ),
    }


def _check(src: BigCommerceSource, *, sync_contacts: bool) -> None:
    source_with = source(src.api_path, sync_contacts=sync_contacts)
    check(source_with, timezone="America/Chicago")


def record_all() -> None:
    import os

    os.environ[TOKEN_ENV] = RECORDING_TOKEN
    stub = Stub()

    def live(request: Any) -> Any:
        request.uri = request.uri.replace(stub.base, LIVE_HOST)
        return request

    def stable(response: dict[str, Any]) -> dict[str, Any]:
        # The stub's clock and server name would make every re-recording differ.
        for name in ("date", "server", "Date", "Server"):
            response["headers"].pop(name, None)
        return response

    recorder = vcr.VCR(
        cassette_library_dir=str(HERE),
        record_mode="all",
        # The token never reaches a cassette; the stub's loopback host neither.
        filter_headers=["X-Auth-Token", "host"],
        before_record_request=live,
        before_record_response=stable,
        match_on=MATCH_ON,
    )
    src = source(f"{stub.base}/stores/{STORE_HASH}/v3/")
    for name, (replies, run) in scenarios().items():
        stub.script(*replies)
        (HERE / f"{name}.yaml").unlink(missing_ok=True)  # "all" would append to it
        with recorder.use_cassette(f"{name}.yaml") as cassette:
            run(src)
        assert not stub.replies, f"{name}: {len(stub.replies)} scripted replies left unused"
        for request in cassette.requests:
            body = json.loads(request.body) if request.body else None
            problems = request_problems(request.method, request.uri, body)
            assert not problems, problems
        text = (HERE / f"{name}.yaml").read_text()
        assert RECORDING_TOKEN not in text and "x-auth-token" not in text.lower()
        print(f"{name}: {len(cassette.requests)} request(s)")
    stub.server.shutdown()


if __name__ == "__main__":
    record_all()

"""Check a BigCommerce request against the official OpenAPI specs.

`request_problems(method, url, body)` lists what a request does that its operation does not
declare: an unknown path or method, a query parameter the operation does not have, a value
outside the parameter's enum or type, a `limit` above 250, a date filter without a time part
(the catalog would append the server's current time), a body that fails the request schema.
Used on every cassette request and on every request an end-to-end sync sends to the sandbox.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

# First path segments after /stores/<hash>/ -> spec file.
SPEC_FILES = (
    ("v2/orders", "orders.v2.oas2.yml"),
    ("v2/store", "store_information.v2.yml"),
    ("v2/time", "store_information.v2.yml"),
    ("v3/customers", "customers.v3.yml"),
    ("v3/catalog/products", "products_catalog.v3.yml"),
    ("v3/inventory/items", "inventory.v3.yml"),
    ("v3/inventory/locations", "locations.v3.yml"),
)
DATE_PARAMS = re.compile(r"date_(created|modified)")
HAS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def spec_dir() -> Path | None:
    here = Path(__file__).resolve()
    candidates = [Path(os.environ.get("AIQ_REFERENCE_DIR", "/nonexistent"))]
    candidates += [p / "shared" / "reference" for p in here.parents]
    candidates.append(Path("/work/shared/reference"))
    for base in candidates:
        spec = base / "bigcommerce" / "spec"
        if (spec / "orders.v2.oas2.yml").exists():
            return spec
    return None


@cache
def _spec(name: str) -> dict[str, Any]:
    folder = spec_dir()
    assert folder is not None, "BigCommerce reference specs not found"
    return yaml.safe_load((folder / name).read_text())


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _convert(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema (nullable -> null type; annotations dropped)."""
    if isinstance(node, list):
        return [_convert(x) for x in node]
    if isinstance(node, dt.date | dt.datetime):
        return node.isoformat()
    if not isinstance(node, dict):
        return node
    skip = {"example", "examples", "description", "title", "xml", "externalDocs", "default"}
    skip |= {"deprecated", "readOnly", "writeOnly", "discriminator", "nullable"}
    out = {
        k: ({n: _convert(s) for n, s in v.items()} if k == "properties" else _convert(v))
        for k, v in node.items()
        if not k.startswith("x-") and k not in skip
    }
    if node.get("nullable") is True:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _operation(method: str, api_path: str) -> tuple[dict[str, Any], dict[str, Any], list] | None:
    for prefix, name in SPEC_FILES:
        if api_path == prefix or api_path.startswith(prefix + "/"):
            spec = _spec(name)
            rel = "/" + api_path.split("/", 1)[1]  # drop v2/ or v3/
            # Literal paths first: /orders/count is not /orders/{order_id}.
            for template, item in sorted(spec["paths"].items(), key=lambda p: p[0].count("{")):
                pattern = "^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$"
                if re.match(pattern, rel) and method.lower() in item:
                    op = item[method.lower()]
                    params = [_resolve(spec, p) for p in item.get("parameters", [])]
                    params += [_resolve(spec, p) for p in op.get("parameters", [])]
                    return spec, op, params
    return None


def _type_ok(value: str, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    try:
        if kind == "integer":
            int(value)
        elif kind == "number":
            float(value)
        elif kind == "boolean":
            return value in ("true", "false", "1", "0")
    except ValueError:
        return False
    return True


def _in_enum(value: str, enum: list[Any]) -> bool:
    """v2 `sort` lists fields and documents `:asc`/`:desc` suffixes in its description."""
    allowed = [str(e) for e in enum]
    field, _, direction = value.rpartition(":")
    return value in allowed or (
        direction in ("asc", "desc") and field in allowed and not any(":" in a for a in allowed)
    )


def request_problems(method: str, url: str, body: Any = None) -> list[str]:
    split = urlsplit(url)
    match = re.match(r"^/stores/[A-Za-z0-9]+/(.*)$", split.path)
    if not match:
        return [f"{url}: not under /stores/<store_hash>/"]
    api_path = match.group(1)
    found = _operation(method, api_path)
    if found is None:
        return [f"{method} {api_path}: no such operation in the specs"]
    spec, op, params = found
    declared = {p["name"]: p for p in params if p.get("in") == "query"}
    problems = []
    for name, value in parse_qsl(split.query, keep_blank_values=True):
        where = f"{method} {api_path}?{name}={value}"
        param = declared.get(name)
        if param is None:
            problems.append(f"{where}: parameter not declared by the spec")
            continue
        schema = _resolve(spec, param.get("schema", {}))
        if schema.get("type") == "array":
            items = _resolve(spec, schema.get("items", {}))
            values = value.split(",")
            if "enum" in items and any(v not in items["enum"] for v in values):
                problems.append(f"{where}: not in {items['enum']}")
            if not all(_type_ok(v, items) for v in values):
                problems.append(f"{where}: not of type {items.get('type')}")
        else:
            if "enum" in schema and not _in_enum(value, schema["enum"]):
                problems.append(f"{where}: not in {schema['enum']}")
            if not _type_ok(value, schema):
                problems.append(f"{where}: not of type {schema.get('type')}")
        if name == "limit" and int(float(value)) > 250:
            problems.append(f"{where}: above the maximum of 250")
        if DATE_PARAMS.search(name) and not HAS_TIME.match(value):
            problems.append(f"{where}: a date filter needs a full ISO-8601 timestamp")
    if method.upper() in ("POST", "PUT"):
        problems += _body_problems(spec, op, f"{method} {api_path}", body)
    return problems


def _body_problems(spec: dict[str, Any], op: dict[str, Any], where: str, body: Any) -> list[str]:
    import jsonschema

    request_body = _resolve(spec, op.get("requestBody", {}))
    schema = _resolve(spec, request_body.get("content", {}).get("application/json", {}))
    schema = schema.get("schema")
    if schema is None:
        return []
    root = {"allOf": [_convert(schema)], "components": _convert(spec.get("components", {}))}
    validator = jsonschema.Draft202012Validator(root)
    return [f"{where} body: {e.message}" for e in validator.iter_errors(body)]

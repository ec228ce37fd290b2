"""Flat-file rows -> canonical personas, sales, items and products.

Mapping (docs/warehouse.md has the full table):
- one line = one sale item, identified by (TransactionID, Item ID): a line re-sent in a
  later file counts once (the newest file wins);
- a refund is a line with a TransactionRefundID or a negative quantity; refund amounts and
  quantities are stored negative whatever sign the file used;
- TransactionDate + Completed Time are local to the source's time zone, stored in UTC;
- sale totals are the sum of the sale's items (recomputed after each merge);
- `Patient Age` holds a birth date; an unparseable one becomes NULL (not a rejection).
"""

from __future__ import annotations

import json
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa

from aiq_sync.canonical import (
    QUARANTINE_SCHEMA,
    CanonicalBatch,
    NormaliseContext,
    persona_key,
    sale_key,
)
from aiq_sync.landing import Manifest
from aiq_sync.normalise import (
    OUT_OF_RANGE,
    clean_text,
    email_normal,
    map_unique,
    nulls_to_none,
    parse_date,
    parse_decimal,
    phone_e164,
    split_name,
)

ENTITY = "lines"
_CENTI_CENT = Decimal("0.0001")
PERSONA_FIELDS = [
    "persona_key", "customer_id", "patient_name", "phone", "email", "birth", "postal_code",
    "address", "sold_at", "_pv",
]  # fmt: skip
MONEY_FIELDS = ("subtotal", "tax", "discount", "allocated_price")


def _try(func):
    def wrapped(value):
        try:
            return func(value)
        except ValueError:
            return _BAD

    return wrapped


def _why_bad(raw: object) -> str:
    """The end of a quarantine reason for an amount parse_decimal refused (bad rows only)."""
    try:
        parse_decimal(raw)  # type: ignore[arg-type]
    except ValueError as exc:
        if str(exc).startswith(OUT_OF_RANGE):
            return " is out of range (at most 12 digits before the decimal point)"
    return " is not a number"


class _Bad:
    def __repr__(self) -> str:
        return "<bad>"


_BAD = _Bad()


def _local_times(dates: pd.Series, times: pd.Series, tz: str) -> tuple[pd.Series, pd.Series]:
    """Local date + optional HH:MM:SS -> (UTC timestamps, bad-time mask)."""
    time_text = times.fillna("00:00:00")
    parsed_time = pd.to_datetime(time_text, format="%H:%M:%S", errors="coerce")
    short = parsed_time.isna()
    if short.any():  # 'HH:MM' also appears
        parsed_time = parsed_time.fillna(
            pd.to_datetime(time_text.where(short), format="%H:%M", errors="coerce")
        )
    bad_time = parsed_time.isna()
    seconds = (
        parsed_time.dt.hour * 3600 + parsed_time.dt.minute * 60 + parsed_time.dt.second
    ).fillna(0)
    naive = pd.to_datetime(dates.astype("object").where(dates.notna()), errors="coerce")
    naive = naive + pd.to_timedelta(seconds, unit="s")
    # Ambiguous fall-back hour: take the first occurrence (daylight time); a time that does
    # not exist (spring-forward gap) is moved forward.
    local = naive.dt.tz_localize(
        ZoneInfo(tz), ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward"
    )
    return local.dt.tz_convert("UTC"), bad_time


class FileDropNormaliser:
    entity = ENTITY

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        df = raw.to_pandas()
        for column in df.columns.drop("_line"):
            df[column] = nulls_to_none(df[column])
        n = len(df)
        batch = CanonicalBatch(rows_in=n)
        if n == 0:
            return batch
        reason = pd.Series([None] * n, index=df.index, dtype="object")

        def reject(mask: pd.Series, why: str | pd.Series) -> None:
            target = mask & reason.isna()
            if target.any():
                reason[target] = why if isinstance(why, str) else why[target]

        reject(df["transaction_id"].isna(), "TransactionID is empty (required)")
        reject(df["customer_id"].isna(), "Patient Number is empty (required)")
        reject(df["item_id"].isna(), "Item ID is empty (needed to tell the sale's lines apart)")

        dates = map_unique(df["transaction_date"], _try(parse_date))
        bad_date = dates.map(lambda v: v is _BAD).astype(bool)
        reject(
            bad_date | df["transaction_date"].isna(),
            "TransactionDate "
            + df["transaction_date"].fillna("").map(repr)
            + " is not a date (YYYY/MM/DD or YYYY-MM-DD)",
        )
        dates = dates.where(~bad_date, None)
        sold_at, bad_time = _local_times(dates, df["completed_time"], context.timezone)
        reject(
            bad_time & df["completed_time"].notna(),
            "Completed Time "
            + df["completed_time"].fillna("").map(repr)
            + " is not a 24-hour time (HH:MM:SS)",
        )

        numbers: dict[str, pd.Series] = {}
        for column, label in (
            ("quantity", "InventoryQuantity"),
            ("subtotal", "Agg - Product Sales (subtotal)"),
            ("tax", "AllocatedTax"),
            ("discount", "Product Discount"),
            ("allocated_price", "AllocatedPrice"),
        ):
            values = map_unique(df[column], _try(parse_decimal))
            bad = values.map(lambda v: v is _BAD).astype(bool)
            if bad.any():
                raw = df[column][bad]
                reject(bad, label + " " + raw.fillna("").map(repr) + raw.map(_why_bad))
            numbers[column] = values.where(~bad, None)

        birth = map_unique(df["birth_date"], _try(parse_date))
        birth = birth.where(~birth.map(lambda v: v is _BAD).astype(bool), None)

        bad = reason.notna()
        batch.quarantine = self._quarantine(df[bad], reason[bad], manifest)
        good = df[~bad].copy()
        if good.empty:
            return batch
        for column, values in numbers.items():
            good[column] = values[~bad]
        good["sold_at"] = sold_at[~bad]
        good["birth"] = birth[~bad]
        good = good.rename(columns={"phone": "phone_raw", "email": "email_raw"})
        self._to_tables(good, manifest, context, batch)
        return batch

    @staticmethod
    def _quarantine(rows: pd.DataFrame, reasons: pd.Series, manifest: Manifest) -> pa.Table:
        payload = rows.drop(columns=["_line"]).to_dict(orient="records")
        return pa.table(
            {
                "partition_key": [manifest.partition_key] * len(rows),
                "file": [manifest.origin.get("file")] * len(rows),
                "line": rows["_line"].astype("int64").tolist(),
                "record_id": [
                    f"{t or '?'}/{i or '?'}"
                    for t, i in zip(rows["transaction_id"], rows["item_id"], strict=True)
                ],
                "reason": reasons.astype(str).tolist(),
                "raw": [json.dumps({k: v for k, v in r.items() if v is not None}) for r in payload],
            },
            schema=QUARANTINE_SCHEMA,
        )

    def _to_tables(
        self, g: pd.DataFrame, manifest: Manifest, ctx: NormaliseContext, batch: CanonicalBatch
    ) -> None:
        src = ctx.source
        # Newest file wins; within a file the later line wins.
        g["_version"] = manifest.version + "|" + g["_line"].map("{:09d}".format)
        g["is_refund"] = g["refund_of"].notna() | g["quantity"].map(
            lambda q: q is not None and q < 0
        )
        # Refunds are stored negative whatever sign the file used; other lines keep theirs.
        for column in ("quantity", *MONEY_FIELDS):
            g[column] = [
                None if v is None else (-abs(v) if refund else v)
                for v, refund in zip(g[column], g["is_refund"], strict=True)
            ]
        g["sale_key"] = [sale_key(src, t) for t in g["transaction_id"]]
        g["persona_key"] = [persona_key(src, c) for c in g["customer_id"]]
        # LocationID identifies the location; Facility Name stands in when it is blank, and
        # either may be the key a store is configured with.
        g["location_key"] = [
            lid if lid is not None else name
            for lid, name in zip(g["location_id"], g["facility_name"], strict=True)
        ]
        store_by_key = ctx.store_map
        g["store_id"] = [
            store_by_key.get(lk) or (store_by_key.get(name) if name else None)
            for lk, name in zip(g["location_key"], g["facility_name"], strict=True)
        ]
        for column in ("product_name", "vendor", "category", "facility_name", "order_type",
                       "postal_code", "address"):  # fmt: skip
            g[column] = nulls_to_none(g[column].map(clean_text))
        # Validate contact fields per line, so a newer invalid phone never hides a valid one.
        g["phone"] = map_unique(g["phone_raw"], phone_e164)
        g["email"] = map_unique(g["email_raw"], email_normal)

        net = [
            a if a is not None else (s - (d or 0) if s is not None else None)
            for a, s, d in zip(g["allocated_price"], g["subtotal"], g["discount"], strict=True)
        ]
        unit_price = [
            (s / q).quantize(_CENTI_CENT) if s is not None and q else None
            for s, q in zip(g["subtotal"], g["quantity"], strict=True)
        ]
        items = pd.DataFrame(
            {
                "sale_key": g["sale_key"],
                "line_id": g["item_id"],
                "source": src,
                "sku": g["item_id"],
                "product_id": g["item_id"],
                "name": g["product_name"],
                "brand": g["vendor"],
                "category": g["category"],
                "quantity": g["quantity"],
                "unit_price": unit_price,
                "subtotal": g["subtotal"],
                "discount": g["discount"],
                "tax": g["tax"],
                "total": net,
                "_version": g["_version"],
            }
        )
        # Sale header: one per transaction, from its newest line.
        newest = g.sort_values("_version").drop_duplicates("sale_key", keep="last")
        sales = pd.DataFrame(
            {
                "sale_key": newest["sale_key"],
                "source": src,
                "src_sale_id": newest["transaction_id"],
                "persona_key": newest["persona_key"],
                "store_id": newest["store_id"],
                "location_key": newest["location_key"],
                "location_name": newest["facility_name"],
                "sold_at": newest["sold_at"],
                "sold_local_date": newest["sold_at"].dt.tz_convert(ZoneInfo(ctx.timezone)).dt.date,
                "status": newest["is_refund"].map({True: "refund", False: "completed"}),
                "is_refund": newest["is_refund"],
                "refunded_sale_id": newest["refund_of"],
                "order_type": newest["order_type"],
                "currency": "USD",
                "_version": newest["_version"],
            }
        )
        # Persona: the customer as of their latest transaction; blanks keep older values.
        # Per field, the newest non-blank value (groupby().last() skips nulls).
        latest = (
            g.assign(_pv=g["sold_at"].map(lambda t: t.isoformat()) + "|" + g["_version"])
            .sort_values("_pv")[PERSONA_FIELDS]
            .groupby("persona_key", sort=False, as_index=False)
            .last()
        )
        for column in latest.columns:
            latest[column] = nulls_to_none(latest[column])
        names = latest["patient_name"].map(split_name)
        batch.notes["invalid_phone"] = int((g["phone_raw"].notna() & g["phone"].isna()).sum())
        batch.notes["invalid_email"] = int((g["email_raw"].notna() & g["email"].isna()).sum())
        personas = pd.DataFrame(
            {
                "persona_key": latest["persona_key"],
                "source": src,
                "source_type": ctx.source_type,
                "src_id": latest["customer_id"],
                "first_name": [n[0] for n in names],
                "last_name": [n[1] for n in names],
                "email": latest["email"],
                "phone": latest["phone"],
                "birth_date": latest["birth"],
                "postal_code": latest["postal_code"],
                "address": latest["address"],
                "updated_at": latest["sold_at"],
                "_version": latest["_pv"],
            }
        )
        products = items.sort_values("_version").drop_duplicates("product_id", keep="last")
        products = pd.DataFrame(
            {
                "source": src,
                "product_id": products["product_id"],
                "sku": products["sku"],
                "name": products["name"],
                "brand": products["brand"],
                "category": products["category"],
                "price": products["unit_price"],
                "_version": products["_version"],
            }
        )
        batch.tables = {
            "core.personas": _arrow(personas),
            "core.sales": _arrow(sales),
            "core.sale_items": _arrow(items),
            "core.products": _arrow(products),
        }
        batch.item_derived_sales = sales["sale_key"].tolist()


def _arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)

"""Versioned DuckDB schema migrations. Append new versions; never edit an applied one.

Conventions (docs/warehouse.md documents every column):
- money is DECIMAL(18,4); timestamps are TIMESTAMPTZ in UTC;
- natural keys are enforced by the loader's merge (and checked by asset checks), not by
  index constraints: DuckDB's ART indexes make bulk delete-then-insert merges slow and
  fragile, while the merge already guarantees one row per key;
- `_version` orders competing versions of a row: the newest wins whatever the load order,
  which keeps back-fills and re-runs deterministic.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


MONEY = "DECIMAL(18,4)"

MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "schemas and canonical tables",
        f"""
        CREATE SCHEMA IF NOT EXISTS core;
        CREATE SCHEMA IF NOT EXISTS loyalty;
        CREATE SCHEMA IF NOT EXISTS ops;
        CREATE SCHEMA IF NOT EXISTS analytics;

        CREATE TABLE core.stores (
            store_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            location_keys VARCHAR[] NOT NULL
        );

        CREATE TABLE core.personas (
            persona_key VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            source_type VARCHAR NOT NULL,
            src_id VARCHAR NOT NULL,
            first_name VARCHAR,
            last_name VARCHAR,
            email VARCHAR,
            phone VARCHAR,
            birth_date DATE,
            postal_code VARCHAR,
            address VARCHAR,
            created_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ,
            contact_id BIGINT,
            favorite_store_id VARCHAR,
            _version VARCHAR NOT NULL
        );

        CREATE TABLE core.contacts (
            contact_id BIGINT NOT NULL,
            phone VARCHAR,
            email VARCHAR,
            first_name VARCHAR,
            last_name VARCHAR,
            birth_date DATE,
            favorite_store_id VARCHAR,
            sources VARCHAR[]
        );

        CREATE TABLE core.sales (
            sale_key VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            src_sale_id VARCHAR NOT NULL,
            persona_key VARCHAR,
            contact_id BIGINT,
            store_id VARCHAR,
            location_key VARCHAR,
            location_name VARCHAR,
            sold_at TIMESTAMPTZ NOT NULL,
            sold_local_date DATE NOT NULL,
            status VARCHAR NOT NULL,
            is_refund BOOLEAN NOT NULL,
            refunded_sale_id VARCHAR,
            order_type VARCHAR,
            subtotal {MONEY},
            discount {MONEY},
            tax {MONEY},
            total {MONEY},
            currency VARCHAR,
            item_count INTEGER,
            _version VARCHAR NOT NULL
        );

        CREATE TABLE core.sale_items (
            sale_key VARCHAR NOT NULL,
            line_id VARCHAR NOT NULL,
            line_no INTEGER,
            source VARCHAR NOT NULL,
            sku VARCHAR,
            product_id VARCHAR,
            name VARCHAR,
            brand VARCHAR,
            category VARCHAR,
            quantity DECIMAL(18,4),
            unit_price {MONEY},
            subtotal {MONEY},
            discount {MONEY},
            tax {MONEY},
            total {MONEY},
            _version VARCHAR NOT NULL
        );

        CREATE TABLE core.products (
            source VARCHAR NOT NULL,
            product_id VARCHAR NOT NULL,
            sku VARCHAR,
            name VARCHAR,
            brand VARCHAR,
            category VARCHAR,
            price {MONEY},
            image_url VARCHAR,
            updated_at TIMESTAMPTZ,
            _version VARCHAR NOT NULL
        );

        CREATE TABLE core.inventory (
            source VARCHAR NOT NULL,
            store_id VARCHAR,
            location_key VARCHAR NOT NULL,
            sku VARCHAR,
            product_id VARCHAR NOT NULL,
            quantity DECIMAL(18,4),
            unit_cost {MONEY},
            unit_price {MONEY},
            margin {MONEY},
            snapshot_at TIMESTAMPTZ NOT NULL,
            _version VARCHAR NOT NULL
        );

        CREATE TABLE loyalty.members (
            contact_id BIGINT NOT NULL,
            source VARCHAR NOT NULL,
            enrolled_at TIMESTAMPTZ NOT NULL,
            reason VARCHAR NOT NULL,
            rule_date DATE
        );

        CREATE TABLE loyalty.points_ledger (
            contact_id BIGINT NOT NULL,
            sale_key VARCHAR NOT NULL,
            points DECIMAL(18,4) NOT NULL,
            earned_at TIMESTAMPTZ NOT NULL
        );

        CREATE TABLE loyalty.opt_in_requests (
            contact_id BIGINT NOT NULL,
            phone VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            qualifying_sale_at TIMESTAMPTZ NOT NULL,
            queued_at TIMESTAMPTZ NOT NULL,
            status VARCHAR NOT NULL
        );

        CREATE TABLE ops.quarantine (
            source VARCHAR NOT NULL,
            entity VARCHAR NOT NULL,
            partition_key VARCHAR NOT NULL,
            file VARCHAR,
            line BIGINT,
            record_id VARCHAR,
            reason VARCHAR NOT NULL,
            raw VARCHAR,
            quarantined_at TIMESTAMPTZ NOT NULL
        );

        CREATE TABLE ops.unmapped_locations (
            source VARCHAR NOT NULL,
            location_key VARCHAR NOT NULL,
            location_name VARCHAR,
            sales_count BIGINT NOT NULL,
            first_sale_at TIMESTAMPTZ,
            last_sale_at TIMESTAMPTZ
        );

        CREATE TABLE ops.sync_state (
            source VARCHAR NOT NULL,
            entity VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            value VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL
        );

        CREATE TABLE ops.loaded_partitions (
            source VARCHAR NOT NULL,
            entity VARCHAR NOT NULL,
            partition_key VARCHAR NOT NULL,
            manifest_id VARCHAR NOT NULL,
            rows_in BIGINT NOT NULL,
            rows_quarantined BIGINT NOT NULL,
            loaded_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "analytics views",
        """
        CREATE OR REPLACE VIEW analytics.personas AS
        SELECT p.persona_key, p.source, p.source_type AS sourced_from, p.src_id,
               p.first_name, p.last_name, p.email, p.phone, p.birth_date, p.postal_code,
               p.address, p.created_at, p.updated_at, p.contact_id, p.favorite_store_id
        FROM core.personas p;

        CREATE OR REPLACE VIEW analytics.sales AS
        SELECT s.sale_key, s.source, s.src_sale_id, s.persona_key, s.contact_id,
               s.store_id, st.name AS store_name, s.location_key, s.location_name, s.sold_at,
               s.sold_local_date, s.status, s.is_refund, s.refunded_sale_id, s.order_type,
               s.subtotal, s.discount, s.tax, s.total, s.currency, s.item_count
        FROM core.sales s LEFT JOIN core.stores st USING (store_id);
        """,
    ),
    Migration(
        3,
        "identity map, opt-outs and ledger detail",
        f"""
        -- persona -> contact as last resolved: what keeps contact ids stable across runs
        -- (core.personas.contact_id is a copy the loader may blank when it re-merges a row).
        CREATE TABLE core.contact_keys (
            persona_key VARCHAR NOT NULL,
            contact_id BIGINT NOT NULL,
            assigned_at TIMESTAMPTZ NOT NULL
        );
        -- a contact id retired because its personas now belong to another contact
        CREATE TABLE core.contact_merges (
            old_contact_id BIGINT NOT NULL,
            contact_id BIGINT NOT NULL,
            merged_at TIMESTAMPTZ NOT NULL
        );
        ALTER TABLE core.contacts ADD COLUMN sourced_from VARCHAR[];
        ALTER TABLE core.contacts ADD COLUMN persona_count INTEGER;

        CREATE TABLE loyalty.opt_outs (
            phone VARCHAR NOT NULL,
            keyword VARCHAR NOT NULL,
            opted_out_at TIMESTAMPTZ,
            source VARCHAR NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL
        );
        ALTER TABLE loyalty.opt_in_requests ADD COLUMN updated_at TIMESTAMPTZ;

        ALTER TABLE loyalty.points_ledger ADD COLUMN source VARCHAR;
        ALTER TABLE loyalty.points_ledger ADD COLUMN kind VARCHAR;
        ALTER TABLE loyalty.points_ledger ADD COLUMN base_amount {MONEY};
        ALTER TABLE loyalty.points_ledger ADD COLUMN points_per_unit INTEGER;
        ALTER TABLE loyalty.points_ledger ADD COLUMN refunded_sale_key VARCHAR;
        ALTER TABLE loyalty.points_ledger ADD COLUMN rule_date DATE;
        """,
    ),
    Migration(
        4,
        "analytics views for loyalty, SMS opt-ins and stores",
        """
        CREATE OR REPLACE VIEW analytics.loyalty_members AS
        WITH enrolled AS (
            SELECT contact_id, min(enrolled_at) AS enrolled_at,
                   list_sort(list(DISTINCT source)) AS enrolled_via,
                   list_sort(list(DISTINCT reason)) AS reasons
            FROM loyalty.members GROUP BY contact_id
        ), points AS (
            SELECT contact_id, sum(points) AS points_balance,
                   sum(points) FILTER (WHERE kind = 'earn') AS points_earned,
                   sum(points) FILTER (WHERE kind = 'reverse') AS points_reversed,
                   max(earned_at) FILTER (WHERE kind = 'earn') AS last_earned_at
            FROM loyalty.points_ledger GROUP BY contact_id
        )
        SELECT e.contact_id, c.first_name, c.last_name, c.email, c.phone, c.birth_date,
               c.favorite_store_id, st.name AS favorite_store_name, c.sourced_from,
               e.enrolled_at, e.enrolled_via, e.reasons,
               coalesce(p.points_balance, 0) AS points_balance,
               coalesce(p.points_earned, 0) AS points_earned,
               coalesce(p.points_reversed, 0) AS points_reversed,
               p.last_earned_at
        FROM enrolled e
        LEFT JOIN core.contacts c USING (contact_id)
        LEFT JOIN points p USING (contact_id)
        LEFT JOIN core.stores st ON st.store_id = c.favorite_store_id;

        CREATE OR REPLACE VIEW analytics.opt_in_queue AS
        SELECT r.contact_id, r.phone, r.source, r.qualifying_sale_at, r.queued_at, r.status,
               r.updated_at, c.first_name, c.last_name, c.favorite_store_id,
               EXISTS (SELECT 1 FROM loyalty.opt_outs o WHERE o.phone = r.phone) AS opted_out
        FROM loyalty.opt_in_requests r LEFT JOIN core.contacts c USING (contact_id);

        CREATE OR REPLACE VIEW analytics.store_daily_sales AS
        SELECT s.sold_local_date, s.store_id, st.name AS store_name, s.currency,
               count(*) FILTER (WHERE NOT s.is_refund AND s.status = 'completed') AS sales,
               count(*) FILTER (WHERE s.is_refund) AS refunds,
               coalesce(sum(s.total) FILTER (WHERE NOT s.is_refund AND s.status = 'completed'),
                        0) AS gross_sales,
               coalesce(sum(s.total) FILTER (WHERE s.is_refund), 0) AS refund_total,
               coalesce(sum(s.total) FILTER (WHERE s.is_refund
                        OR s.status = 'completed'), 0) AS net_sales,
               coalesce(sum(s.tax) FILTER (WHERE s.is_refund
                        OR s.status = 'completed'), 0) AS net_tax,
               count(DISTINCT s.contact_id) FILTER (WHERE NOT s.is_refund
                        AND s.status = 'completed') AS identified_shoppers,
               count(*) FILTER (WHERE NOT s.is_refund AND s.status = 'completed'
                        AND s.contact_id IS NULL) AS anonymous_sales
        FROM core.sales s LEFT JOIN core.stores st USING (store_id)
        GROUP BY s.sold_local_date, s.store_id, st.name, s.currency;
        """,
    ),
    Migration(
        5,
        "bigcommerce: contact sync log, inventory location names",
        """
        -- One row per persona a BigCommerce source's contact sync dealt with, so re-runs never
        -- create a customer twice. status: created (POST /v3/customers answered with its id),
        -- matched (a store customer already has the e-mail or phone), rejected (422; detail
        -- holds the reason; retried only when the payload changes, see payload_hash).
        CREATE TABLE ops.contact_sync (
            source VARCHAR NOT NULL,
            persona_key VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            bc_customer_id BIGINT,
            detail VARCHAR,
            payload_hash VARCHAR,
            attempted_at TIMESTAMPTZ NOT NULL
        );
        -- The source's name of a location (BigCommerce: the location label), so an unmapped
        -- stock location can be listed by name in ops.unmapped_locations.
        ALTER TABLE core.inventory ADD COLUMN location_name VARCHAR;
        """,
    ),
]

LATEST_VERSION = MIGRATIONS[-1].version

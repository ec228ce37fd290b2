"""Favourite store per contact, written to core.contacts and core.personas.

The favourite is the mapped store (core.sales.store_id not NULL) where the contact made the
most completed sales in the 12 months up to `as_of` (local sale dates in
(as_of - 12 months, as_of]); ties go to the store visited most recently, then to the lower
store id. `as_of` defaults to the latest sale date in the warehouse, not today, so the same
data always gives the same answer. A contact with no mapped sale in the window has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from aiq_sync import warehouse
from aiq_sync.warehouse import Connection

WINDOW_MONTHS = 12


@dataclass
class FavoriteReport:
    as_of: date | None
    contacts_with_favorite: int = 0
    contacts_changed: int = 0
    personas_changed: int = 0

    def as_metadata(self) -> dict[str, object]:
        return {
            "favorite_store_as_of": self.as_of.isoformat() if self.as_of else None,
            "contacts_with_favorite_store": self.contacts_with_favorite,
            "favorite_store_changed": self.contacts_changed,
        }


def assign_favorite_stores(con: Connection, *, as_of: date | None = None) -> FavoriteReport:
    with warehouse.transaction(con):
        if as_of is None:
            as_of = con.execute("SELECT max(sold_local_date) FROM core.sales").fetchone()[0]
        report = FavoriteReport(as_of)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE fav_next AS
            WITH visits AS (
                SELECT contact_id, store_id, count(*) AS n, max(sold_at) AS last_at
                FROM core.sales
                WHERE contact_id IS NOT NULL AND store_id IS NOT NULL
                  AND NOT is_refund AND status = 'completed'
                  AND sold_local_date > $as_of::DATE - INTERVAL {WINDOW_MONTHS} MONTH
                  AND sold_local_date <= $as_of::DATE
                GROUP BY contact_id, store_id
            )
            SELECT c.contact_id, v.store_id
            FROM core.contacts c LEFT JOIN (
                SELECT contact_id, store_id FROM visits
                QUALIFY row_number() OVER (
                    PARTITION BY contact_id ORDER BY n DESC, last_at DESC, store_id) = 1
            ) v USING (contact_id)
            """,
            {"as_of": as_of},
        )
        report.contacts_changed = con.execute(
            """
            UPDATE core.contacts c SET favorite_store_id = f.store_id FROM fav_next f
            WHERE c.contact_id = f.contact_id AND c.favorite_store_id IS DISTINCT FROM f.store_id
            """
        ).fetchone()[0]
        report.personas_changed = con.execute(
            """
            UPDATE core.personas p SET favorite_store_id = f.store_id
            FROM (SELECT x.persona_key, c.favorite_store_id AS store_id
                  FROM core.personas x LEFT JOIN core.contacts c USING (contact_id)) f
            WHERE p.persona_key = f.persona_key
              AND p.favorite_store_id IS DISTINCT FROM f.store_id
            """
        ).fetchone()[0]
        report.contacts_with_favorite = con.execute(
            "SELECT count(*) FROM core.contacts WHERE favorite_store_id IS NOT NULL"
        ).fetchone()[0]
        con.execute("DROP TABLE fav_next")
    return report

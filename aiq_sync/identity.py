"""Identity resolution: personas -> contacts with ids that stay put across runs.

Merge rule: two personas are the same person when they share a valid phone (E.164) or a
valid e-mail (lower-cased), from any source or within one, and transitively (A shares a
phone with B, B an e-mail with C: one contact). Only personas with some PII (a name,
e-mail, phone or address) become contacts; the others, and sales without a persona, stay
anonymous (contact_id NULL).

Components are computed in SQL by min-label propagation over the persona <-> key graph
with pointer jumping: every pass is two set-based hash aggregations, so the work stays in
DuckDB whatever the number of personas, and the number of passes grows with the longest
chain of links (a handful for real data), not with the data size. Keys held by a single
persona link nothing and are dropped first.

Stable ids: `core.contact_keys` remembers each persona's contact id. Every old id is won by
the new component holding most of its personas (ties: the smallest persona_key); a
component keeps the smallest id it won, and its other won ids are retired into
`core.contact_merges` (loyalty rows follow). A component that won nothing gets a new id above
every id ever issued, in persona_key order, so a re-run or an unrelated newcomer never
renumbers anyone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiq_sync import warehouse
from aiq_sync.warehouse import Connection

log = logging.getLogger("aiq_sync.identity")

# A persona is a person we can address or recognise only with one of these.
PII_COLUMNS = ("first_name", "last_name", "email", "phone", "address")
# Where the highest contact id ever issued is kept (ids of retired contacts are never reused).
STATE = ("identity", "contacts", "last_contact_id")

CONTACT_COLUMNS = (
    "contact_id",
    "phone",
    "email",
    "first_name",
    "last_name",
    "birth_date",
    "favorite_store_id",
    "sources",
    "sourced_from",
    "persona_count",
)
# Tables whose contact_id follows a retired id to the contact that absorbed it.
LOYALTY_TABLES = ("loyalty.members", "loyalty.points_ledger", "loyalty.opt_in_requests")


@dataclass
class IdentityReport:
    personas: int = 0
    anonymous_personas: int = 0
    contacts: int = 0
    new_contacts: int = 0
    updated_contacts: int = 0
    removed_contacts: int = 0
    reassigned_personas: int = 0
    merged: list[tuple[int, int]] = field(default_factory=list)  # (retired id, kept id)
    passes: int = 0
    sales_relinked: int = 0

    def as_metadata(self) -> dict[str, object]:
        return {
            "personas": self.personas,
            "anonymous_personas": self.anonymous_personas,
            "contacts": self.contacts,
            "contacts_new": self.new_contacts,
            "contacts_updated": self.updated_contacts,
            "contacts_removed": self.removed_contacts,
            "personas_reassigned": self.reassigned_personas,
            "contacts_merged": len(self.merged),
            "label_passes": self.passes,
            "sales_relinked": self.sales_relinked,
        }


def resolve_contacts(con: Connection, *, now: datetime | None = None) -> IdentityReport:
    """Rebuild core.contacts from core.personas (one transaction) and link personas and sales.

    Idempotent: a second call with no new personas changes no row.
    """
    now = now or datetime.now(UTC)
    report = IdentityReport()
    with warehouse.transaction(con):
        report.passes = _components(con)
        _assign_ids(con, now, report)
        _write_contacts(con, report)
        _link_personas_and_sales(con, report)
        _drop_temp(con)
    report.personas, report.anonymous_personas = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE contact_id IS NULL) FROM core.personas"
    ).fetchone()
    report.contacts = con.execute("SELECT count(*) FROM core.contacts").fetchone()[0]
    log.info("identity: %s", report.as_metadata())
    return report


def _has_pii(alias: str = "p") -> str:
    return "(" + " OR ".join(f"{alias}.{c} IS NOT NULL" for c in PII_COLUMNS) + ")"


def _components(con: Connection) -> int:
    """id_components(persona_key, node, comp): comp is the smallest node of the component."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_nodes AS
        SELECT persona_key, row_number() OVER (ORDER BY persona_key) AS node
        FROM core.personas p WHERE {_has_pii()}
        """
    )
    # Every (node, phone or e-mail key), then only the keys two nodes share. A node has one
    # phone and one e-mail and the prefixes differ, so UNION ALL repeats nothing. A window
    # count over every key (the first version) ran out of 128 MB at 2M personas; a GROUP
    # BY over a materialised table spills.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_keyed AS
        SELECT n.node, 'p:' || p.phone AS k
        FROM core.personas p JOIN id_nodes n USING (persona_key) WHERE p.phone IS NOT NULL
        UNION ALL
        SELECT n.node, 'e:' || lower(p.email)
        FROM core.personas p JOIN id_nodes n USING (persona_key) WHERE p.email IS NOT NULL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_edges AS
        WITH shared AS (SELECT k FROM id_keyed GROUP BY k HAVING count(*) > 1)
        SELECT node, k FROM id_keyed SEMI JOIN shared USING (k)
        """
    )
    con.execute("DROP TABLE id_keyed")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE id_labels AS SELECT node, node AS label FROM id_nodes"
    )
    passes = 0
    while True:
        passes += 1
        changed = con.execute(
            """
            WITH key_min AS (
                SELECT e.k, min(l.label) AS label
                FROM id_edges e JOIN id_labels l USING (node) GROUP BY e.k
            ), best AS (
                SELECT e.node, min(km.label) AS label
                FROM id_edges e JOIN key_min km USING (k) GROUP BY e.node
            )
            UPDATE id_labels l SET label = b.label FROM best b
            WHERE l.node = b.node AND b.label < l.label
            """
        ).fetchone()[0]
        # Pointer jumping: adopt the label of your label, which halves chains each pass.
        changed += con.execute(
            """
            UPDATE id_labels l SET label = j.label FROM id_labels j
            WHERE l.label = j.node AND j.label < l.label
            """
        ).fetchone()[0]
        if not changed:
            break
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_components AS
        SELECT n.persona_key, n.node, l.label AS comp
        FROM id_nodes n JOIN id_labels l USING (node)
        """
    )
    return passes


def _assign_ids(con: Connection, now: datetime, report: IdentityReport) -> None:
    """id_assigned(persona_key, contact_id) from the components and the remembered ids."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_winners AS
        WITH votes AS (
            SELECT k.contact_id AS old_id, c.comp, count(*) AS n, min(c.persona_key) AS first_key
            FROM id_components c JOIN core.contact_keys k USING (persona_key)
            GROUP BY k.contact_id, c.comp
        )
        SELECT old_id, comp FROM votes
        QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY n DESC, first_key) = 1
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_kept AS
        SELECT comp, min(old_id) AS contact_id FROM id_winners GROUP BY comp
        """
    )
    last_issued = max(
        int(warehouse.get_state(con, *STATE) or 0),
        con.execute(
            """
            SELECT greatest(
                (SELECT coalesce(max(contact_id), 0) FROM core.contact_keys),
                (SELECT coalesce(max(old_contact_id), 0) FROM core.contact_merges),
                (SELECT coalesce(max(contact_id), 0) FROM core.contacts))
            """
        ).fetchone()[0],
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_comp_ids AS
        SELECT comp, contact_id FROM id_kept
        UNION ALL
        SELECT comp, ? + row_number() OVER (ORDER BY comp) AS contact_id
        FROM (SELECT DISTINCT comp FROM id_components) c
        WHERE comp NOT IN (SELECT comp FROM id_kept)
        """,
        [last_issued],
    )
    highest = con.execute("SELECT max(contact_id) FROM id_comp_ids").fetchone()[0]
    if highest is not None and highest > last_issued:
        warehouse.set_state(con, *STATE, str(highest))
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_assigned AS
        SELECT c.persona_key, i.contact_id
        FROM id_components c JOIN id_comp_ids i USING (comp)
        """
    )
    merged = con.execute(
        """
        SELECT w.old_id, k.contact_id FROM id_winners w JOIN id_kept k USING (comp)
        WHERE w.old_id <> k.contact_id ORDER BY w.old_id
        """
    ).fetchall()
    report.merged = [(int(a), int(b)) for a, b in merged]
    if merged:
        _retire(con, report.merged, now)
    report.reassigned_personas = con.execute(
        """
        SELECT count(*) FROM (
            SELECT persona_key, contact_id FROM id_assigned
            EXCEPT SELECT persona_key, contact_id FROM core.contact_keys)
        """
    ).fetchone()[0]
    con.execute(
        """
        DELETE FROM core.contact_keys k WHERE NOT EXISTS (
            SELECT 1 FROM id_assigned a
            WHERE a.persona_key = k.persona_key AND a.contact_id = k.contact_id)
        """
    )
    con.execute(
        """
        INSERT INTO core.contact_keys
        SELECT a.persona_key, a.contact_id, ? FROM id_assigned a
        WHERE NOT EXISTS (SELECT 1 FROM core.contact_keys k WHERE k.persona_key = a.persona_key)
        """,
        [now],
    )


def _retire(con: Connection, merged: list[tuple[int, int]], now: datetime) -> None:
    """Point every reference to a retired id at the contact that absorbed it."""
    con.execute("CREATE OR REPLACE TEMP TABLE id_retired (old_id BIGINT, new_id BIGINT)")
    con.executemany("INSERT INTO id_retired VALUES (?, ?)", [list(m) for m in merged])
    # Earlier merges into a now-retired id follow it, so the map is always one hop.
    con.execute(
        """
        UPDATE core.contact_merges m SET contact_id = r.new_id FROM id_retired r
        WHERE m.contact_id = r.old_id
        """
    )
    con.execute("INSERT INTO core.contact_merges SELECT old_id, new_id, ? FROM id_retired", [now])
    for table in LOYALTY_TABLES:
        con.execute(
            f"UPDATE {table} t SET contact_id = r.new_id FROM id_retired r "
            "WHERE t.contact_id = r.old_id"
        )
    # Two memberships of the same source now on one contact: keep the earliest.
    con.execute(
        """
        DELETE FROM loyalty.members WHERE rowid IN (
            SELECT rowid FROM loyalty.members
            QUALIFY row_number() OVER (
                PARTITION BY contact_id, source ORDER BY enrolled_at, reason) > 1)
        """
    )
    log.info("identity: %d contact(s) merged into others: %s", len(merged), merged[:10])


def _write_contacts(con: Connection, report: IdentityReport) -> None:
    """Diff-apply core.contacts so unchanged rows are not rewritten (and changes are counted).

    Field choice when personas disagree: phone, e-mail and name come from the most recently
    updated persona that has one; the birth date is the latest (youngest) claimed, so the
    age rule errs on the side of exclusion. The favourite store is carried over (its own
    step recomputes it).
    """
    cols = ", ".join(CONTACT_COLUMNS)
    # Recency as one BIGINT rank (the most recently updated persona highest; no date: lowest;
    # ties by key), computed by a spillable sort. Each field's winner is then found as the
    # highest rank among the contact's personas that have it, and joined back by rank.
    # Aggregates keep integers only, because DuckDB cannot spill aggregate states that own
    # strings or lists: `arg_max(phone, recency)` and friends plus `list(DISTINCT source)`
    # in one GROUP BY ran out of the 128 MB default at 500k personas (the 1M-order bench),
    # though each alone fitted. (Ordered first() buffers every group's rows and cannot
    # spill at all.) The old favourite store is joined after grouping.
    named = "FILTER (WHERE first_name IS NOT NULL OR last_name IS NOT NULL)"
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_ranked AS
        SELECT a.contact_id, p.phone, lower(p.email) AS email, p.first_name, p.last_name,
               p.birth_date, p.source, p.source_type,
               row_number() OVER (
                   ORDER BY coalesce(p.updated_at, '-infinity'::TIMESTAMPTZ), p.persona_key
               ) AS recency
        FROM id_assigned a
        JOIN core.personas p USING (persona_key)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_next_contacts AS
        WITH grouped AS (
            SELECT contact_id,
                   max(recency) FILTER (WHERE phone IS NOT NULL) AS phone_rank,
                   max(recency) FILTER (WHERE email IS NOT NULL) AS email_rank,
                   max(recency) {named} AS name_rank,
                   max(birth_date) AS birth_date,
                   count(*)::INTEGER AS persona_count
            FROM id_ranked
            GROUP BY contact_id
        ), origins AS (
            -- One row per contact and source first, so each list holds a few short strings.
            SELECT contact_id,
                   list_sort(list(source)) AS sources,
                   list_sort(list_distinct(list(source_type))) AS sourced_from
            FROM (SELECT DISTINCT contact_id, source, source_type FROM id_ranked)
            GROUP BY contact_id
        )
        SELECT g.contact_id, ph.phone, em.email, nm.first_name, nm.last_name, g.birth_date,
               old.favorite_store_id, o.sources, o.sourced_from, g.persona_count
        FROM grouped g
        JOIN origins o USING (contact_id)
        LEFT JOIN id_ranked ph ON ph.recency = g.phone_rank
        LEFT JOIN id_ranked em ON em.recency = g.email_rank
        LEFT JOIN id_ranked nm ON nm.recency = g.name_rank
        LEFT JOIN core.contacts old ON old.contact_id = g.contact_id
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_contact_changes AS
        SELECT {cols} FROM id_next_contacts EXCEPT SELECT {cols} FROM core.contacts
        """
    )
    report.new_contacts, report.updated_contacts = con.execute(
        """
        SELECT count(*) FILTER (WHERE contact_id NOT IN (SELECT contact_id FROM core.contacts)),
               count(*) FILTER (WHERE contact_id IN (SELECT contact_id FROM core.contacts))
        FROM id_contact_changes
        """
    ).fetchone()
    report.removed_contacts = con.execute(
        "SELECT count(*) FROM core.contacts "
        "WHERE contact_id NOT IN (SELECT contact_id FROM id_next_contacts)"
    ).fetchone()[0]
    con.execute(
        """
        DELETE FROM core.contacts
        WHERE contact_id NOT IN (SELECT contact_id FROM id_next_contacts)
           OR contact_id IN (SELECT contact_id FROM id_contact_changes)
        """
    )
    con.execute(f"INSERT INTO core.contacts ({cols}) SELECT {cols} FROM id_contact_changes")


def _link_personas_and_sales(con: Connection, report: IdentityReport) -> None:
    """Copy contact ids onto personas and sales, touching only rows that differ."""
    # Two plain updates, not one from a self-join of personas with its keys: at 1M personas
    # under the 128 MB default that join ran for two minutes instead of seconds.
    con.execute(
        """
        UPDATE core.personas p SET contact_id = k.contact_id
        FROM core.contact_keys k
        WHERE p.persona_key = k.persona_key AND p.contact_id IS DISTINCT FROM k.contact_id
        """
    )
    con.execute(
        """
        UPDATE core.personas SET contact_id = NULL
        WHERE contact_id IS NOT NULL
          AND persona_key NOT IN (SELECT persona_key FROM core.contact_keys)
        """
    )
    report.sales_relinked = con.execute(
        """
        UPDATE core.sales s SET contact_id = k.contact_id
        FROM core.contact_keys k
        WHERE s.persona_key = k.persona_key AND s.contact_id IS DISTINCT FROM k.contact_id
        """
    ).fetchone()[0]
    report.sales_relinked += con.execute(
        """
        UPDATE core.sales SET contact_id = NULL
        WHERE contact_id IS NOT NULL AND (persona_key IS NULL OR persona_key NOT IN (
            SELECT persona_key FROM core.contact_keys))
        """
    ).fetchone()[0]


def _drop_temp(con: Connection) -> None:
    for name in (
        "id_nodes",
        "id_edges",
        "id_labels",
        "id_components",
        "id_winners",
        "id_kept",
        "id_comp_ids",
        "id_assigned",
        "id_ranked",
        "id_retired",
        "id_next_contacts",
        "id_contact_changes",
    ):
        con.execute(f"DROP TABLE IF EXISTS {name}")

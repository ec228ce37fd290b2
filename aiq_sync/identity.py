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
    """Rebuild core.contacts from core.personas and link personas and sales (one transaction).

    The working tables are planned first, outside the transaction, and only the writes run
    inside it: DuckDB keeps a transaction's temp tables, dropped ones included, in memory until
    commit, and planning inside it ran a nightly at 500k personas out of the 128 MB default.
    Planning only reads the warehouse, and the caller is its single writer.

    Idempotent: a second call with no new personas changes no row.
    """
    now = now or datetime.now(UTC)
    report = IdentityReport()
    try:
        report.passes = _components(con)
        ids = _plan_ids(con, report)
        _plan_contacts(con, report)
        with warehouse.transaction(con):
            _apply_ids(con, now, report, ids)
            _write_contacts(con)
            _link_personas_and_sales(con, report)
    finally:
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
    """id_components(node, comp): comp is the smallest node of the component; id_nodes maps
    each node to its persona_key (nodes are numbered in persona_key order)."""
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
    # The labels are the components: renamed, not copied (no persona_key in them; every
    # working table below is keyed by the integer node, see _drop_temp).
    con.execute("DROP TABLE id_edges")
    con.execute("ALTER TABLE id_labels RENAME TO id_components")
    con.execute("ALTER TABLE id_components RENAME COLUMN label TO comp")
    return passes


@dataclass(frozen=True)
class _IdPlan:
    last_issued: int
    highest: int | None


def _plan_ids(con: Connection, report: IdentityReport) -> _IdPlan:
    """id_assigned(node, contact_id) from the components and the remembered ids; the merges
    into report.merged and the count of personas whose contact changes."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_winners AS
        WITH votes AS (
            -- min(node) is the smallest persona_key: nodes are numbered in that order.
            SELECT k.contact_id AS old_id, c.comp, count(*) AS n, min(c.node) AS first_node
            FROM id_components c
            JOIN id_nodes n USING (node)
            JOIN core.contact_keys k USING (persona_key)
            GROUP BY k.contact_id, c.comp
        )
        SELECT old_id, comp FROM votes
        QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY n DESC, first_node) = 1
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
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_assigned AS
        SELECT c.node, i.contact_id
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
    # From here on only id_nodes and id_assigned are needed.
    _drop_temp(con, keep=("id_nodes", "id_assigned"))
    report.reassigned_personas = con.execute(
        """
        SELECT count(*) FROM (
            SELECT n.persona_key, a.contact_id FROM id_assigned a JOIN id_nodes n USING (node)
            EXCEPT SELECT persona_key, contact_id FROM core.contact_keys)
        """
    ).fetchone()[0]
    return _IdPlan(last_issued, highest)


def _apply_ids(con: Connection, now: datetime, report: IdentityReport, plan: _IdPlan) -> None:
    """Record the planned ids: the highest issued, the merges, core.contact_keys."""
    if plan.highest is not None and plan.highest > plan.last_issued:
        warehouse.set_state(con, *STATE, str(plan.highest))
    if report.merged:
        _retire(con, report.merged, now)
    con.execute(
        """
        DELETE FROM core.contact_keys k WHERE NOT EXISTS (
            SELECT 1 FROM id_assigned a JOIN id_nodes n USING (node)
            WHERE n.persona_key = k.persona_key AND a.contact_id = k.contact_id)
        """
    )
    con.execute(
        """
        INSERT INTO core.contact_keys
        SELECT n.persona_key, a.contact_id, ? FROM id_assigned a JOIN id_nodes n USING (node)
        WHERE NOT EXISTS (SELECT 1 FROM core.contact_keys k WHERE k.persona_key = n.persona_key)
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


def _plan_contacts(con: Connection, report: IdentityReport) -> None:
    """id_contact_changes: the contacts to insert or rewrite (unchanged rows are not
    rewritten), and id_grouped: every contact that remains. Counts the changes.

    Field choice when personas disagree: phone, e-mail and name come from the most recently
    updated persona that has one; the birth date is the latest (youngest) claimed, so the
    age rule errs on the side of exclusion. The favourite store is carried over (its own
    step recomputes it).
    """
    # Working tables hold integers and flags; the contact rows are built in steps of one or
    # two joins each, so every step can spill. Aggregates keep integers too: DuckDB cannot
    # spill aggregate states that own strings or lists (`arg_max(phone, recency)` plus
    # `list(DISTINCT source)` over every contact ran out of the 128 MB default at 500k
    # personas), so the source lists are aggregated for multi-persona contacts only.
    #
    # Recency is one BIGINT rank (the most recently updated persona highest; no date: lowest;
    # ties by key, which node order is), from a spillable sort. Each field's winner is the
    # highest rank among the contact's personas that have it.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_ranked AS
        SELECT a.contact_id, a.node,
               row_number() OVER (
                   ORDER BY coalesce(p.updated_at, '-infinity'::TIMESTAMPTZ), a.node
               ) AS recency,
               p.phone IS NOT NULL AS has_phone, p.email IS NOT NULL AS has_email,
               (p.first_name IS NOT NULL OR p.last_name IS NOT NULL) AS has_name,
               p.birth_date
        FROM id_assigned a
        JOIN id_nodes n USING (node)
        JOIN core.personas p USING (persona_key)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_grouped AS
        SELECT contact_id,
               max(recency) FILTER (WHERE has_phone) AS phone_rank,
               max(recency) FILTER (WHERE has_email) AS email_rank,
               max(recency) FILTER (WHERE has_name) AS name_rank,
               max(birth_date) AS birth_date,
               count(*)::INTEGER AS persona_count,
               min(node) AS first_node
        FROM id_ranked
        GROUP BY contact_id
        """
    )
    # Most contacts are one persona: its fields are the contact's.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_next_contacts AS
        SELECT g.contact_id, p.phone, lower(p.email) AS email, p.first_name, p.last_name,
               g.birth_date, [p.source] AS sources, [p.source_type] AS sourced_from,
               g.persona_count
        FROM (SELECT * FROM id_grouped WHERE persona_count = 1) g
        JOIN id_nodes n ON n.node = g.first_node
        JOIN core.personas p USING (persona_key)
        """
    )
    # The others: each field from the persona that won it, found by rank.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_multi_ranked AS
        SELECT r.contact_id, r.recency, p.phone, lower(p.email) AS email, p.first_name,
               p.last_name, p.source, p.source_type
        FROM id_ranked r
        JOIN id_nodes n USING (node)
        JOIN core.personas p USING (persona_key)
        WHERE r.contact_id IN (SELECT contact_id FROM id_grouped WHERE persona_count > 1)
        """
    )
    con.execute(
        """
        INSERT INTO id_next_contacts
        WITH origins AS (
            -- One row per contact and source first, so each list holds a few short strings.
            SELECT contact_id,
                   list_sort(list(source)) AS sources,
                   list_sort(list_distinct(list(source_type))) AS sourced_from
            FROM (SELECT DISTINCT contact_id, source, source_type FROM id_multi_ranked)
            GROUP BY contact_id
        )
        SELECT g.contact_id, ph.phone, em.email, nm.first_name, nm.last_name, g.birth_date,
               o.sources, o.sourced_from, g.persona_count
        FROM (SELECT * FROM id_grouped WHERE persona_count > 1) g
        JOIN origins o USING (contact_id)
        LEFT JOIN id_multi_ranked ph ON ph.recency = g.phone_rank
        LEFT JOIN id_multi_ranked em ON em.recency = g.email_rank
        LEFT JOIN id_multi_ranked nm ON nm.recency = g.name_rank
        """
    )
    con.execute("DROP TABLE id_ranked")
    con.execute("DROP TABLE id_multi_ranked")
    # Compared by key, not with EXCEPT (which hashes whole rows, lists included); the
    # favourite store is carried over from the stored row.
    differs = " OR ".join(
        f"n.{c} IS DISTINCT FROM old.{c}" for c in CONTACT_COLUMNS[1:] if c != "favorite_store_id"
    )
    columns = ", ".join(
        "old.favorite_store_id" if c == "favorite_store_id" else f"n.{c}" for c in CONTACT_COLUMNS
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_contact_changes AS
        SELECT {columns} FROM id_next_contacts n
        LEFT JOIN core.contacts old USING (contact_id)
        WHERE old.contact_id IS NULL OR {differs}
        """
    )
    con.execute("DROP TABLE id_next_contacts")
    report.new_contacts, report.updated_contacts = con.execute(
        """
        SELECT count(*) FILTER (WHERE contact_id NOT IN (SELECT contact_id FROM core.contacts)),
               count(*) FILTER (WHERE contact_id IN (SELECT contact_id FROM core.contacts))
        FROM id_contact_changes
        """
    ).fetchone()
    report.removed_contacts = con.execute(
        "SELECT count(*) FROM core.contacts "
        "WHERE contact_id NOT IN (SELECT contact_id FROM id_grouped)"
    ).fetchone()[0]


def _write_contacts(con: Connection) -> None:
    """Apply the planned contact changes."""
    cols = ", ".join(CONTACT_COLUMNS)
    con.execute(
        """
        DELETE FROM core.contacts
        WHERE contact_id NOT IN (SELECT contact_id FROM id_grouped)
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


_TEMP_TABLES = (
    "id_nodes",
    "id_keyed",
    "id_edges",
    "id_labels",
    "id_components",
    "id_winners",
    "id_kept",
    "id_comp_ids",
    "id_assigned",
    "id_ranked",
    "id_grouped",
    "id_next_contacts",
    "id_multi_ranked",
    "id_retired",
    "id_contact_changes",
)


def _drop_temp(con: Connection, keep: tuple[str, ...] = ()) -> None:
    for name in _TEMP_TABLES:
        if name not in keep:
            con.execute(f"DROP TABLE IF EXISTS {name}")

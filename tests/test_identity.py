"""Identity resolution and favourite stores, on real DuckDB files (no Dagster).

The helpers at the top (`Shop`) are shared with tests/test_loyalty.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aiq_sync import warehouse
from aiq_sync.favorites import assign_favorite_stores
from aiq_sync.identity import resolve_contacts

NOW = datetime(2024, 12, 1, tzinfo=UTC)
PHONE_A, PHONE_B, PHONE_C = "+14152345678", "+15032345678", "+16042345678"
TOLL_FREE = "+18005550100"


class Shop:
    """Writes canonical rows the way the loader would, with readable defaults."""

    def __init__(self, con: warehouse.Connection):
        self.con = con

    def persona(
        self,
        key: str,
        *,
        phone: str | None = None,
        email: str | None = None,
        first: str | None = "Ann",
        last: str | None = "Lee",
        birth: date | None = None,
        address: str | None = None,
        updated: datetime = datetime(2024, 1, 1, tzinfo=UTC),
        source_type: str = "file_drop",
    ) -> None:
        source, src_id = key.split(":", 1)
        self.con.execute(
            "INSERT INTO core.personas (persona_key, source, source_type, src_id, first_name, "
            "last_name, email, phone, birth_date, address, updated_at, _version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '1')",
            [key, source, source_type, src_id, first, last, email, phone, birth, address, updated],
        )

    def update_persona(self, key: str, **values: object) -> None:
        sets = ", ".join(f"{column} = ?" for column in values)
        self.con.execute(
            f"UPDATE core.personas SET {sets} WHERE persona_key = ?", [*values.values(), key]
        )

    def sale(
        self,
        sale_id: str,
        persona: str | None,
        *,
        local: str = "2024-06-15 12:00",
        tz: str = "America/Los_Angeles",
        total: str = "10.00",
        tax: str = "0",
        status: str = "completed",
        refund_of: str | None = None,
        store: str | None = "s1",
        source: str | None = None,
    ) -> str:
        """A sale (or, with refund_of, a refund whose amounts are stored negative).

        `local` is the store's wall-clock time in `tz`: sold_local_date is its date.
        """
        source = source or (persona.split(":", 1)[0] if persona else "a")
        at = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz))
        is_refund = refund_of is not None
        sign = -1 if is_refund else 1
        key = f"{source}:{sale_id}"
        self.con.execute(
            "INSERT INTO core.sales (sale_key, source, src_sale_id, persona_key, store_id, "
            "location_key, sold_at, sold_local_date, status, is_refund, refunded_sale_id, "
            "subtotal, tax, total, currency, _version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'USD', '1')",
            [
                key,
                source,
                sale_id,
                persona,
                store,
                store,
                at.astimezone(UTC),
                at.date(),
                "refund" if is_refund else status,
                is_refund,
                refund_of,
                sign * Decimal(total) - sign * Decimal(tax),
                sign * Decimal(tax),
                sign * Decimal(total),
            ],
        )
        return key

    def contact_of(self, persona: str) -> int | None:
        row = self.con.execute(
            "SELECT contact_id FROM core.personas WHERE persona_key = ?", [persona]
        ).fetchone()
        return row[0] if row else None

    def contacts(self) -> dict[str, int | None]:
        return dict(
            self.con.execute("SELECT persona_key, contact_id FROM core.personas").fetchall()
        )

    def groups(self) -> set[frozenset[str]]:
        by_contact: dict[int, set[str]] = {}
        for persona, contact in self.contacts().items():
            if contact is not None:
                by_contact.setdefault(contact, set()).add(persona)
        return {frozenset(g) for g in by_contact.values()}

    def scalar(self, sql: str, params: list | None = None):
        return self.con.execute(sql, params or []).fetchone()[0]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    with warehouse.open_warehouse(tmp_path / "w.duckdb") as con:
        yield Shop(con)


# --------------------------------------------------------------------------- merge rule

P = dict  # persona spec: key plus Shop.persona keyword arguments

MERGE_CASES = {
    "shared phone in one source": (
        [P(key="a:1", phone=PHONE_A), P(key="a:2", phone=PHONE_A)],
        [{"a:1", "a:2"}],
    ),
    "shared email across sources": (
        [P(key="a:1", email="x@example.com"), P(key="b:1", email="x@example.com")],
        [{"a:1", "b:1"}],
    ),
    "transitive: phone then email": (
        [
            P(key="a:1", phone=PHONE_A),
            P(key="b:1", phone=PHONE_A, email="x@example.com"),
            P(key="c:1", email="x@example.com"),
            P(key="c:2", phone=PHONE_B),
        ],
        [{"a:1", "b:1", "c:1"}, {"c:2"}],
    ),
    "same name only is not a match": (
        [P(key="a:1"), P(key="a:2")],
        [{"a:1"}, {"a:2"}],
    ),
    "toll-free phone is still a valid phone": (
        [P(key="a:1", phone=TOLL_FREE), P(key="b:1", phone=TOLL_FREE)],
        [{"a:1", "b:1"}],
    ),
    "no PII: no contact": (
        [P(key="a:1", first=None, last=None), P(key="a:2", phone=PHONE_A)],
        [{"a:2"}],
    ),
    "address alone is PII": (
        [P(key="a:1", first=None, last=None, address="1 Main St")],
        [{"a:1"}],
    ),
}


@pytest.mark.parametrize("personas, expected", MERGE_CASES.values(), ids=MERGE_CASES.keys())
def test_merge_rule(shop: Shop, personas: list[dict], expected: list[set[str]]) -> None:
    for spec in personas:
        shop.persona(**spec)
    resolve_contacts(shop.con, now=NOW)
    assert shop.groups() == {frozenset(g) for g in expected}
    unlinked = {p["key"] for p in personas} - set().union(*expected)
    assert all(shop.contact_of(k) is None for k in unlinked)


def test_long_chain_is_one_contact(shop: Shop) -> None:
    # p0 -phone- p1 -email- p2 -phone- p3 ... : the worst case for label propagation.
    n = 60
    for i in range(n):
        shop.persona(
            f"a:{i:03d}",
            phone=f"+1415234{(i + 1) // 2:04d}",
            email=f"u{i // 2}@example.com",
        )
    report = resolve_contacts(shop.con, now=NOW)
    assert len(shop.groups()) == 1
    assert report.passes < 15  # pointer jumping: far fewer passes than the chain length


def test_sales_get_contacts_and_anonymous_sales_do_not(shop: Shop) -> None:
    shop.persona("a:1", phone=PHONE_A)
    shop.persona("a:2", first=None, last=None)
    named = shop.sale("t1", "a:1")
    no_pii = shop.sale("t2", "a:2")
    anonymous = shop.sale("t3", None)
    resolve_contacts(shop.con, now=NOW)
    contact = dict(shop.con.execute("SELECT sale_key, contact_id FROM core.sales").fetchall())
    assert contact[named] == shop.contact_of("a:1") is not None
    assert contact[no_pii] is None and contact[anonymous] is None


def test_contact_fields_when_personas_disagree(shop: Shop) -> None:
    shop.persona(
        "a:1",
        phone=PHONE_A,
        email="old@example.com",
        first="Annie",
        last=None,
        birth=date(1990, 5, 1),
        updated=datetime(2024, 1, 1, tzinfo=UTC),
    )
    shop.persona(
        "b:1",
        phone=PHONE_A,
        email=None,
        first="Ann",
        last="Lee",
        birth=date(1992, 5, 1),
        updated=datetime(2024, 3, 1, tzinfo=UTC),
        source_type="bigcommerce",
    )
    resolve_contacts(shop.con, now=NOW)
    row = shop.con.execute(
        "SELECT phone, email, first_name, last_name, birth_date, sources, sourced_from, "
        "persona_count FROM core.contacts"
    ).fetchone()
    # newest persona's phone and name (as a pair); newest known e-mail; youngest birth date
    assert row == (
        PHONE_A,
        "old@example.com",
        "Ann",
        "Lee",
        date(1992, 5, 1),
        ["a", "b"],
        ["bigcommerce", "file_drop"],
        2,
    )


# ------------------------------------------------------------------------- id stability


def test_rerun_changes_nothing(shop: Shop) -> None:
    shop.persona("a:1", phone=PHONE_A)
    shop.persona("a:2", email="x@example.com")
    shop.sale("t1", "a:1")
    resolve_contacts(shop.con, now=NOW)
    before = shop.contacts()
    report = resolve_contacts(shop.con, now=NOW)
    assert shop.contacts() == before
    assert (report.new_contacts, report.updated_contacts, report.removed_contacts) == (0, 0, 0)
    assert (report.reassigned_personas, report.sales_relinked, report.merged) == (0, 0, [])


def test_new_unrelated_persona_never_renumbers(shop: Shop) -> None:
    for key in ("a:5", "a:7", "a:9"):
        shop.persona(key, email=f"{key[-1]}@example.com")
    resolve_contacts(shop.con, now=NOW)
    before = shop.contacts()
    shop.persona("a:0", phone=PHONE_C)  # sorts first: must not take id 1
    report = resolve_contacts(shop.con, now=NOW)
    after = shop.contacts()
    assert {k: after[k] for k in before} == before
    assert after["a:0"] == max(before.values()) + 1
    assert report.new_contacts == 1 and report.updated_contacts == 0


def test_loader_blanking_contact_ids_does_not_renumber(shop: Shop) -> None:
    # The loader's merge rewrites whole persona rows, contact_id included.
    shop.persona("a:1", phone=PHONE_A)
    shop.persona("a:2", phone=PHONE_B)
    resolve_contacts(shop.con, now=NOW)
    before = shop.contacts()
    shop.con.execute("UPDATE core.personas SET contact_id = NULL")
    shop.con.execute("UPDATE core.sales SET contact_id = NULL")
    resolve_contacts(shop.con, now=NOW)
    assert shop.contacts() == before


def _loyalty_rows(shop: Shop, contact: int, source: str, sale: str, enrolled: str) -> None:
    shop.con.execute(
        "INSERT INTO loyalty.members VALUES (?, ?, ?, 'enroll_after', DATE '2024-01-01')",
        [contact, source, datetime.fromisoformat(enrolled)],
    )
    shop.con.execute(
        "INSERT INTO loyalty.points_ledger (contact_id, sale_key, points, earned_at, kind) "
        "VALUES (?, ?, 5, ?, 'earn')",
        [contact, sale, NOW],
    )


def test_two_contacts_linked_keep_the_older_id(shop: Shop) -> None:
    shop.persona("a:1", phone=PHONE_A)
    shop.persona("b:1", email="x@example.com")
    shop.persona("c:1", phone=PHONE_C)
    resolve_contacts(shop.con, now=NOW)
    first, second, other = (shop.contact_of(k) for k in ("a:1", "b:1", "c:1"))
    _loyalty_rows(shop, first, "a", "a:t1", "2024-03-01T00:00:00+00:00")
    _loyalty_rows(shop, second, "a", "b:t1", "2024-02-01T00:00:00+00:00")
    # a new persona carries both keys: the two contacts are one person
    shop.persona("d:1", phone=PHONE_A, email="x@example.com")
    report = resolve_contacts(shop.con, now=NOW)
    kept = min(first, second)
    assert report.merged == [(max(first, second), kept)]
    assert {shop.contact_of(k) for k in ("a:1", "b:1", "d:1")} == {kept}
    assert shop.contact_of("c:1") == other
    assert shop.scalar("SELECT count(*) FROM core.contacts") == 2
    assert shop.con.execute(
        "SELECT old_contact_id, contact_id FROM core.contact_merges"
    ).fetchall() == [(max(first, second), kept)]
    # loyalty follows; the two memberships of source a collapse to the earliest
    members = shop.con.execute("SELECT contact_id, enrolled_at FROM loyalty.members").fetchall()
    assert members == [(kept, datetime(2024, 2, 1, tzinfo=UTC))]
    ledger = shop.con.execute("SELECT DISTINCT contact_id FROM loyalty.points_ledger").fetchall()
    assert ledger == [(kept,)]


def test_split_majority_keeps_id_and_retired_ids_are_never_reused(shop: Shop) -> None:
    shop.persona("a:1", phone=PHONE_A)
    shop.persona("a:2", phone=PHONE_A)
    shop.persona("a:3", phone=PHONE_A)
    shop.persona("b:1", phone=PHONE_B)
    shop.persona("b:2", phone=PHONE_C)
    resolve_contacts(shop.con, now=NOW)
    big, b1, b2 = shop.contact_of("a:1"), shop.contact_of("b:1"), shop.contact_of("b:2")
    # b:1 and b:2 merge (b2's id retires), then a:3 leaves the big contact
    shop.update_persona("b:2", email="y@example.com")
    shop.update_persona("b:1", email="y@example.com")
    resolve_contacts(shop.con, now=NOW)
    assert shop.contact_of("b:2") == b1
    shop.update_persona("a:3", phone="+14159876543")  # a:3 leaves: nothing shared any more
    report = resolve_contacts(shop.con, now=NOW)
    assert shop.contact_of("a:1") == shop.contact_of("a:2") == big
    assert shop.contact_of("a:3") == max(big, b1, b2) + 1  # b2 was issued, retired, not reused
    assert report.new_contacts == 1 and report.merged == []


def test_merge_chains_stay_one_hop(shop: Shop) -> None:
    for key, phone in (("a:1", PHONE_A), ("a:2", PHONE_B), ("a:3", PHONE_C)):
        shop.persona(key, phone=phone)
    resolve_contacts(shop.con, now=NOW)
    ids = [shop.contact_of(k) for k in ("a:1", "a:2", "a:3")]
    shop.persona("b:1", phone=PHONE_B, email="x@example.com")
    shop.persona("b:2", phone=PHONE_C, email="x@example.com")
    resolve_contacts(shop.con, now=NOW)  # 3 -> 2
    shop.persona("b:3", phone=PHONE_A, email="x@example.com")
    resolve_contacts(shop.con, now=NOW)  # 2 -> 1
    merges = dict(
        shop.con.execute("SELECT old_contact_id, contact_id FROM core.contact_merges").fetchall()
    )
    assert merges == {ids[2]: ids[0], ids[1]: ids[0]}


# ------------------------------------------------------------------------ favourite store

# (store, local day) visits; "s2!" is a refund at s2, "s2?" a pending sale at s2.
FAVORITE_CASES = {
    "most sales wins": (
        [("s1", "2024-06-01"), ("s2", "2024-06-02"), ("s2", "2024-06-03")],
        None,
        "s2",
    ),
    "tie goes to the most recent": ([("s1", "2024-06-05"), ("s2", "2024-06-01")], None, "s1"),
    "refunds do not count": (
        [("s1", "2024-06-01"), ("s2!", "2024-06-02"), ("s2!", "2024-06-03")],
        None,
        "s1",
    ),
    "pending sales do not count": (
        [("s1", "2024-06-01"), ("s2?", "2024-06-02"), ("s2?", "2024-06-03")],
        None,
        "s1",
    ),
    "unmapped location ignored": (
        [(None, "2024-06-01"), (None, "2024-06-02"), ("s3", "2024-05-01")],
        None,
        "s3",
    ),
    "a sale exactly 12 months before as_of is out": (
        [("s1", "2023-06-15"), ("s1", "2023-06-16"), ("s2", "2024-01-01"), ("s9", "2024-06-15")],
        None,
        "s9",
    ),
    "the day after that is in": (
        [("s1", "2023-06-16"), ("s1", "2023-06-17"), ("s2", "2024-06-15")],
        None,
        "s1",
    ),
    "explicit as_of ignores later sales": (
        [("s1", "2024-01-01"), ("s2", "2024-06-01"), ("s2", "2024-06-02")],
        date(2024, 3, 1),
        "s1",
    ),
}


@pytest.mark.parametrize(
    "visits, as_of, expected", FAVORITE_CASES.values(), ids=FAVORITE_CASES.keys()
)
def test_favorite_store(shop: Shop, visits: list, as_of: date | None, expected: str) -> None:
    shop.persona("a:1", phone=PHONE_A)
    shop.persona("b:1", phone=PHONE_A)  # same contact: visits from both sources count
    for i, (store, day) in enumerate(visits):
        persona = "a:1" if i % 2 else "b:1"
        local = f"{day} 10:00"
        if store is None:
            shop.sale(f"t{i}", persona, local=local, store=None)
        elif store.endswith("!"):
            shop.sale(f"t{i}", persona, local=local, store=store[:-1], refund_of="x")
        elif store.endswith("?"):
            shop.sale(f"t{i}", persona, local=local, store=store[:-1], status="pending")
        else:
            shop.sale(f"t{i}", persona, local=local, store=store)
    # another shopper's sale is the latest in the warehouse: the default as_of
    shop.persona("z:1", phone=PHONE_C)
    shop.sale("z1", "z:1", local="2024-06-15 18:00", store="s1")
    resolve_contacts(shop.con, now=NOW)
    report = assign_favorite_stores(shop.con, as_of=as_of)
    assert report.as_of == (as_of or date(2024, 6, 15))
    contact = shop.contact_of("a:1")
    assert contact == shop.contact_of("b:1")
    favorite = shop.scalar(
        "SELECT favorite_store_id FROM core.contacts WHERE contact_id = ?", [contact]
    )
    assert favorite == expected
    personas = shop.con.execute(
        "SELECT DISTINCT favorite_store_id FROM core.personas WHERE contact_id = ?", [contact]
    ).fetchall()
    assert personas == [(expected,)]
    assert assign_favorite_stores(shop.con, as_of=as_of).contacts_changed == 0

"""Contact sync (opt-in per source, `sync_contacts: true`): shoppers who signed up elsewhere
become BigCommerce customers.

Rule: a persona of *another* source, first seen on or after the day contact sync was enabled
for this source, with no customer of this store matching its e-mail or phone, is created with
`POST /v3/customers` (at most 10 per request). Existing customers are never modified (no PUT).
- "enabled on" is recorded in ops.sync_state (source, 'contact_sync', 'enabled_on') the first
  time a run sees `sync_contacts: true`, and forgotten when a run sees it off: syncing starts
  the day it is enabled and is never retroactive;
- "first seen" is the persona's created_at, else its first sale;
- matching looks at this store's customers in core.personas, then asks the API
  (`GET /v3/customers?email:in=...`) for customers created since the last customers sync;
- ops.contact_sync remembers every persona dealt with (created / matched / rejected), so a
  re-run creates nothing twice; a rejected one is retried only when its data changed;
- a 422 is reported per record: the batch is split until the bad records are isolated;
- BigCommerce requires e-mail, first and last name: personas without them are skipped (listed).

`plan_contact_sync` is pure (reads DuckDB, no request, no write): the CLI's `--dry-run`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiq_sync import warehouse
from aiq_sync.config import BigCommerceSource
from aiq_sync.http import ApiClient, ApiError
from aiq_sync.warehouse import Connection
from connectors.bigcommerce.client import PAGE_LIMIT, SCOPE_CUSTOMERS_WRITE

T = TypeVar("T")

ENTITY = "contact_sync"
ENABLED_KEY = "enabled_on"
MAX_BATCH = 10  # POST /v3/customers takes at most 10 customers (more: 413)
EMAILS_PER_LOOKUP = 50  # keeps the `email:in` query string short
CREATED, MATCHED, REJECTED = "created", "matched", "rejected"


@dataclass(frozen=True)
class Candidate:
    persona_key: str
    source: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    first_seen: datetime | None

    def payload(self) -> dict[str, Any]:
        """The customer_Post body: only what the shopper gave us, nothing invented."""
        body: dict[str, Any] = {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
        }
        if self.phone:
            body["phone"] = self.phone
        return body

    def payload_hash(self) -> str:
        text = json.dumps(self.payload(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ContactSyncPlan:
    source: str
    enabled_on: date
    to_create: list[Candidate] = field(default_factory=list)
    # (persona_key, why) for personas that need nothing or cannot be created
    matched: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ContactSyncReport:
    source: str
    dry_run: bool = False
    created: list[tuple[str, int]] = field(default_factory=list)  # (persona_key, customer id)
    matched: list[tuple[str, str]] = field(default_factory=list)  # (persona_key, why)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (key, why, hash)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    would_create: list[Candidate] = field(default_factory=list)
    error: str | None = None  # a failure that stopped the sync (after what it recorded)
    requests: int = 0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "created": len(self.created),
            "would_create": len(self.would_create),
            "matched": len(self.matched),
            "rejected": len(self.rejected),
            "skipped": len(self.skipped),
            "requests": self.requests,
            # persona keys and reasons, e-mail addresses masked (422 messages echo them)
            "rejections": [f"{key}: {mask_emails(why)}" for key, why, _ in self.rejected[:50]],
            "error": mask_emails(self.error) if self.error else "",
        }


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def mask_emails(text: str) -> str:
    return _EMAIL.sub("<e-mail>", text)


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# ------------------------------------------------------------------------- enabled date


def enabled_on(con: Connection, source: str) -> date | None:
    value = warehouse.get_state(con, source, ENTITY, ENABLED_KEY)
    return date.fromisoformat(value) if value else None


def ensure_enabled(con: Connection, source: str, today: date) -> date:
    """The day contact sync was enabled; recorded as `today` the first time it is seen on."""
    known = enabled_on(con, source)
    if known is not None:
        return known
    warehouse.set_state(con, source, ENTITY, ENABLED_KEY, today.isoformat())
    return today


def forget_enabled(con: Connection, source: str) -> None:
    """Seen off: turning it on again starts from that new day."""
    con.execute(
        "DELETE FROM ops.sync_state WHERE source = ? AND entity = ? AND key = ?",
        [source, ENTITY, ENABLED_KEY],
    )


# --------------------------------------------------------------------------------- plan

_CANDIDATES_SQL = """
WITH store_customers AS (
    SELECT src_id, email, phone FROM core.personas
    WHERE source = $source AND src_id NOT LIKE 'guest:%'
), first_sale AS (
    SELECT persona_key, min(sold_at) AS first_sale_at FROM core.sales
    WHERE persona_key IS NOT NULL GROUP BY persona_key
), done AS (
    SELECT persona_key, arg_max(status, attempted_at) AS status,
           arg_max(payload_hash, attempted_at) AS payload_hash,
           arg_max(detail, attempted_at) AS detail
    FROM ops.contact_sync WHERE source = $source GROUP BY persona_key
)
SELECT p.persona_key, p.source, p.email, p.phone, p.first_name, p.last_name,
       coalesce(p.created_at, f.first_sale_at) AS first_seen,
       (SELECT min(c.src_id) FROM store_customers c WHERE c.email = p.email) AS by_email,
       (SELECT min(c.src_id) FROM store_customers c WHERE c.phone = p.phone) AS by_phone,
       d.status, d.payload_hash, d.detail
FROM core.personas p
LEFT JOIN first_sale f USING (persona_key)
LEFT JOIN done d USING (persona_key)
WHERE p.source <> $source
  AND coalesce(p.created_at, f.first_sale_at) >= $since
  AND (d.status IS NULL OR d.status = 'rejected')
ORDER BY first_seen, p.persona_key
"""


def plan_contact_sync(
    con: Connection, source: BigCommerceSource, *, enabled_on: date, timezone: str
) -> ContactSyncPlan:
    """What a contact sync would create now. Reads DuckDB only: no request, no write."""
    since = datetime.combine(enabled_on, time(), ZoneInfo(timezone)).astimezone(UTC)
    rows = con.execute(_CANDIDATES_SQL, {"source": source.name, "since": since}).fetchall()
    plan = ContactSyncPlan(source.name, enabled_on)
    taken: dict[str, str] = {}
    for key, src, email, phone, first, last, first_seen, by_email, by_phone, *prev in rows:
        status, old_hash, detail = prev
        if by_email or by_phone:
            how = "e-mail" if by_email else "phone"
            plan.matched.append((key, f"store customer {by_email or by_phone} has its {how}"))
            continue
        candidate = Candidate(key, src, email, phone, first, last, first_seen)
        missing = [n for n, v in (("e-mail", email), ("first name", first), ("last name", last))
                   if not v]  # fmt: skip
        if missing:
            plan.skipped.append((key, f"no {' or '.join(missing)} (BigCommerce requires it)"))
        elif status == REJECTED and old_hash == candidate.payload_hash():
            plan.skipped.append((key, f"rejected before with the same data: {detail}"))
        elif email in taken:
            plan.skipped.append((key, f"same e-mail as {taken[email]}, created with it"))
        else:
            taken[email] = key
            plan.to_create.append(candidate)
    return plan


# --------------------------------------------------------------------------------- push


def push_contacts(
    client: ApiClient, plan: ContactSyncPlan, *, dry_run: bool = False, precheck: bool = True
) -> ContactSyncReport:
    """Create the plan's customers (dry run: only say which). Never raises for an API error:
    it stops and reports it, so what was created before is still recorded."""
    report = ContactSyncReport(plan.source, dry_run=dry_run)
    report.matched += plan.matched
    report.skipped += plan.skipped
    before = client.stats.as_dict()["requests"]
    todo = list(plan.to_create)
    try:
        if precheck and todo:
            todo = _drop_existing(client, todo, report)
        if dry_run:
            report.would_create = todo
        else:
            for batch in _chunks(todo, MAX_BATCH):
                _create(client, batch, report)
    except ApiError as exc:
        report.error = str(exc)
    report.requests = client.stats.as_dict()["requests"] - before
    return report


def _drop_existing(
    client: ApiClient, todo: list[Candidate], report: ContactSyncReport
) -> list[Candidate]:
    """Customers created in the store since its last customers sync are not in core.personas
    yet; ask the store. Also what makes a re-run after a lost answer create no duplicate."""
    existing: dict[str, Any] = {}
    for chunk in _chunks([c.email for c in todo if c.email], EMAILS_PER_LOOKUP):
        answer = client.get_json(
            "v3/customers", {"email:in": ",".join(chunk), "limit": PAGE_LIMIT}
        ).json
        for row in (answer or {}).get("data") or []:
            if isinstance(row, dict) and isinstance(row.get("email"), str):
                existing[row["email"].strip().lower()] = row.get("id")
    keep = []
    for candidate in todo:
        found = existing.get((candidate.email or "").lower())
        if found is None:
            keep.append(candidate)
        else:
            report.matched.append((candidate.persona_key, f"store customer {found} has its e-mail"))
    return keep


def _create(client: ApiClient, batch: list[Candidate], report: ContactSyncReport) -> None:
    try:
        answer = client.post_json(
            "v3/customers", [c.payload() for c in batch], scope=SCOPE_CUSTOMERS_WRITE
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        body = exc.details if exc.details is not None else _json(exc.body_excerpt)
        errors = _indexed_errors(body)
        bad = sorted(i for i in errors if i < len(batch))
        if bad:
            for i in bad:
                report.rejected.append((batch[i].persona_key, errors[i], batch[i].payload_hash()))
            rest = [c for i, c in enumerate(batch) if i not in bad]
            if rest:  # a 422 creates nothing: the others go again
                _create(client, rest, report)
            return
        if len(batch) > 1:  # which record is bad is unknown: halve until it is
            half = len(batch) // 2
            _create(client, batch[:half], report)
            _create(client, batch[half:], report)
            return
        why = _title(body) or str(exc)
        report.rejected.append((batch[0].persona_key, why, batch[0].payload_hash()))
        return
    created = {}
    for row in (answer.json or {}).get("data") or []:
        if isinstance(row, dict) and isinstance(row.get("email"), str):
            created[row["email"].strip().lower()] = row.get("id")
    for candidate in batch:
        customer_id = created.get((candidate.email or "").lower())
        if customer_id is None:
            why = "BigCommerce answered 200 without this customer"
            report.rejected.append((candidate.persona_key, why, candidate.payload_hash()))
        else:
            report.created.append((candidate.persona_key, int(customer_id)))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _indexed_errors(body: Any) -> dict[int, str]:
    """{record index: message} from a v3 422 body (`errors: {"3.email": "..."}`)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    out: dict[int, str] = {}
    for key, message in errors.items() if isinstance(errors, dict) else ():
        head, _, field_name = str(key).partition(".")
        if head.isdigit():
            text = f"{field_name}: {message}" if field_name else str(message)
            out[int(head)] = f"{out[int(head)]}; {text}" if int(head) in out else text
    return out


def _title(body: Any) -> str | None:
    """`<title>: <field>: <message>` of a v3 error body, or None."""
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    details = "; ".join(f"{k}: {v}" for k, v in errors.items()) if isinstance(errors, dict) else ""
    title = body.get("title")
    return ": ".join(p for p in (str(title) if title else "", details) if p) or None


# ------------------------------------------------------------------------------- record


def record_results(con: Connection, report: ContactSyncReport) -> None:
    """Remember what was done (nothing for a dry run), in one transaction."""
    if report.dry_run:
        return
    now = datetime.now(UTC)
    rows = (
        [(key, CREATED, cid, None, None) for key, cid in report.created]
        + [(key, MATCHED, None, why, None) for key, why in report.matched]
        + [(key, REJECTED, None, why, h) for key, why, h in report.rejected]
    )
    if not rows:
        return
    with warehouse.transaction(con):
        con.executemany(
            "DELETE FROM ops.contact_sync WHERE source = ? AND persona_key = ?",
            [[report.source, r[0]] for r in rows],
        )
        con.executemany(
            "INSERT INTO ops.contact_sync VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[report.source, key, st, cid, why, h, now] for key, st, cid, why, h in rows],
        )


def render_report(report: ContactSyncReport) -> str:
    """What `aiq-sync contact-sync` prints: counts, and for a dry run a table of the shoppers
    that would be created (e-mail, phone, name, source: the data the POST would send)."""
    if report.dry_run:
        rows = [
            (c.email or "", c.phone or "", f"{c.first_name} {c.last_name}", c.source)
            for c in report.would_create
        ]
        lines = [f"{report.source}: dry run, {len(rows)} customer(s) would be created"]
        if rows:
            head = ("email", "phone", "name", "source")
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            for row in [head, tuple("-" * w for w in widths), *rows]:
                lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    else:
        lines = [f"{report.source}: {len(report.created)} customer(s) created"]
    lines.append(
        f"{len(report.matched)} matched an existing customer, {len(report.skipped)} skipped, "
        f"{len(report.rejected)} rejected, {report.requests} request(s)"
    )
    lines += [f"skipped {key}: {why}" for key, why in report.skipped]
    lines += [f"rejected {key}: {mask_emails(why)}" for key, why, _ in report.rejected]
    if report.error:
        lines.append(f"stopped: {mask_emails(report.error)}")
    return "\n".join(lines)


def sync_contacts(
    con: Connection,
    client: ApiClient,
    source: BigCommerceSource,
    *,
    today: date,
    timezone: str,
    dry_run: bool = False,
    precheck: bool = True,
) -> ContactSyncReport:
    """Plan, push and record with one connection (the CLI and tests; the Dagster asset holds
    DuckDB only around the plan and the record, not during requests)."""
    since = enabled_on(con, source.name) or today
    if not dry_run:
        since = ensure_enabled(con, source.name, today)
    plan = plan_contact_sync(con, source, enabled_on=since, timezone=timezone)
    report = push_contacts(client, plan, dry_run=dry_run, precheck=precheck)
    record_results(con, report)
    return report

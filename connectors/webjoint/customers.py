"""Landed Webjoint customers -> core.personas (`persona_key` = `<source>:<customer id>`).

E-mail lower-cased and validated, phone to E.164 (region US), an invalid one becomes NULL
(counted in the load report); an unreadable birth date becomes NULL. Only a record without an
id, or with an update/creation time that is not a time, is quarantined.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from aiq_sync.canonical import CanonicalBatch, NormaliseContext, persona_key
from aiq_sync.landing import Manifest
from aiq_sync.normalise import clean_text, email_normal, phone_e164, split_name
from connectors.webjoint.common import PERSONAS, Quarantine, newest_by_id, to_table
from connectors.webjoint.extract import CUSTOMERS
from connectors.webjoint.models import Address, Customer, reasons


def address_line(address: Address | None) -> str | None:
    if address is None:
        return None
    region = " ".join(p for p in (address.state, address.postal_code) if p)
    parts = [address.street, address.street2, address.city, region]
    return clean_text(", ".join(p for p in parts if p))


class WebjointCustomersNormaliser:
    entity = CUSTOMERS

    def normalise(
        self, raw: pa.Table, manifest: Manifest, context: NormaliseContext
    ) -> CanonicalBatch:
        batch = CanonicalBatch(rows_in=raw.num_rows)
        quarantine = Quarantine(manifest)
        rows: list[dict[str, Any]] = []
        invalid_phone = invalid_email = 0
        for record in newest_by_id(raw):
            try:
                customer = Customer.model_validate(record.payload)
            except ValidationError as exc:
                quarantine.add(record.id or None, reasons(exc), record.text)
                continue
            first, last = customer.first_name, customer.last_name
            if not (first or last) and customer.name:
                first, last = split_name(customer.name)
            phone = phone_e164(customer.phone) if customer.phone else None
            email = email_normal(customer.email) if customer.email else None
            invalid_phone += bool(customer.phone and not phone)
            invalid_email += bool(customer.email and not email)
            address = customer.address
            rows.append(
                {
                    "persona_key": persona_key(context.source, customer.id),
                    "source": context.source,
                    "source_type": context.source_type,
                    "src_id": customer.id,
                    "first_name": first,
                    "last_name": last,
                    "email": email,
                    "phone": phone,
                    "birth_date": customer.birth_date,
                    "postal_code": address.postal_code if address else None,
                    "address": address_line(address),
                    "created_at": customer.created,
                    "updated_at": customer.updated or record.modified_at,
                    "_version": record.version(customer.updated or customer.created),
                }
            )
        batch.quarantine = quarantine.table()
        batch.notes = {"invalid_phone": invalid_phone, "invalid_email": invalid_email}
        table = to_table(rows, PERSONAS)
        if table is not None:
            batch.tables["core.personas"] = table
        return batch

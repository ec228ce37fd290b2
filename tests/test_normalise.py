"""Field normalisers: what a user would check in personas and sales."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import permutations
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiq_sync.canonical import PersonaFold
from aiq_sync.normalise import (
    email_normal,
    local_to_utc,
    parse_date,
    parse_decimal,
    phone_e164,
    sms_capable,
    split_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("9162345678", "+19162345678"),  # digits only, as POS files send them
        ("(916) 234-5678", "+19162345678"),
        ("1-916-234-5678", "+19162345678"),
        ("+1 604 555 1234", "+16045551234"),  # Canada shares +1 and is valid
        ("6045551234", "+16045551234"),
        ("555-123-4567", None),  # the reference's invalid examples
        ("1234567890", None),
        ("12345", None),
        ("", None),
        (None, None),
        ("not a phone", None),
    ],
)
def test_phone_e164(raw: str | None, expected: str | None) -> None:
    assert phone_e164(raw) == expected


def test_toll_free_numbers_cannot_receive_sms() -> None:
    assert sms_capable(phone_e164("8005550123")) is False
    assert sms_capable(phone_e164("8885550123")) is False
    assert sms_capable(phone_e164("9162345678")) is True
    assert sms_capable(None) is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane@Example.COM", "jane@example.com"),
        ("  bob.smith+tag@mail.co  ", "bob.smith+tag@mail.co"),
        ("bob@", None),
        ("a@@yahoo.com", None),
        ("none", None),
        ("first last@x.com", None),
        ("", None),
        (None, None),
    ],
)
def test_email_normal(raw: str | None, expected: str | None) -> None:
    assert email_normal(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane Smith", ("Jane", "Smith")),
        ("  Ana   Maria  Lopez ", ("Ana", "Maria Lopez")),
        ("Green, Jacob", ("Jacob", "Green")),
        ("Mei Thompson, II", ("Mei", "Thompson, II")),
        ("Prince", ("Prince", None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_split_name(raw: str | None, expected: tuple[str | None, str | None]) -> None:
    assert split_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("40.00", Decimal("40.00")),
        ("1,234.50", Decimal("1234.50")),
        ("$12.00", Decimal("12.00")),
        ("-3", Decimal("-3")),
        ("(4.25)", Decimal("-4.25")),
        ("", None),
        (None, None),
    ],
)
def test_parse_decimal(raw: str | None, expected: Decimal | None) -> None:
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize("raw", ["12,5x", "1O.99", "#VALUE!", "1.2.3", "n/a", "$$4", "-", "12,34"])
def test_parse_decimal_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal(raw)


def test_parse_date_accepts_both_contract_formats_and_rejects_the_rest() -> None:
    assert parse_date("2026/09/05") == date(2026, 9, 5)
    assert parse_date("2026-09-05") == date(2026, 9, 5)
    assert parse_date("") is None
    for bad in ("2026/13/45", "2026/02/30", "20261045", "N/A"):
        with pytest.raises(ValueError, match="not a date"):
            parse_date(bad)


@given(st.integers(min_value=10**9, max_value=10**10 - 1), st.booleans())
@settings(max_examples=3000, deadline=None)
def test_digits_fast_path_agrees_with_the_general_parser(number: int, leading_one: bool) -> None:
    digits = ("1" if leading_one else "") + str(number)
    try:
        parsed = phonenumbers.parse(digits, "US")
        expected = (
            phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            if phonenumbers.is_valid_number(parsed)
            else None
        )
    except phonenumbers.NumberParseException:
        expected = None
    assert phone_e164(digits) == expected


def test_local_to_utc_reads_dst_edges_like_a_wall_clock():
    la = ZoneInfo("America/Los_Angeles")
    # An ordinary time, the repeated hour of a fall-back (the first, daylight one) and a time
    # in the spring-forward gap (moved to the jump: 03:00 PDT).
    assert local_to_utc(datetime(2026, 7, 1, 12, 0), la) == datetime(2026, 7, 1, 19, 0, tzinfo=UTC)
    assert local_to_utc(datetime(2026, 11, 1, 1, 30), la) == datetime(
        2026, 11, 1, 8, 30, tzinfo=UTC
    )
    assert local_to_utc(datetime(2026, 3, 8, 2, 30), la) == datetime(2026, 3, 8, 10, 0, tzinfo=UTC)


def test_persona_fold_takes_each_fields_newest_value_in_any_order():
    visits = [
        {"persona_key": "p", "_version": "1", "email": "old@x.org", "phone": "+15035550100"},
        {"persona_key": "p", "_version": "3", "email": None, "phone": "+15035550199"},
        {"persona_key": "p", "_version": "2", "email": "mid@x.org", "phone": None},
    ]
    for order in permutations(visits):
        fold = PersonaFold()
        for row in order:
            fold.add(row)
        # e-mail from visit 2 (visit 3 left it blank), phone from visit 3, newest version.
        assert fold.rows["p"] == {
            "persona_key": "p",
            "_version": "3",
            "email": "mid@x.org",
            "phone": "+15035550199",
        }


def _validated(text: str) -> str | None:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def test_plain_addresses_skip_email_validator_and_get_its_answer() -> None:
    """The fast path for plain addresses must agree with email_validator wherever it
    answers: generated addresses with dots, dashes, digits, reserved and numeric top-level
    domains, long labels and the odd non-ASCII letter."""
    from aiq_sync.normalise import _plain_email

    rng = random.Random(7)
    atoms = [
        "ana",
        "Bob",
        "x",
        "9",
        "o'neil",
        "a.b",
        "a..b",
        ".a",
        "b.",
        "a-b",
        "-a",
        "a+b",
        "é",
        "K",
    ]
    domains = [
        "example.com", "Mail.CO", "a.b.c.de", "x-y.org", "-x.com", "x-.com", "host.test",
        "box.local", "a.localhost", "gmail.com.", "b..com", "c.123", "d.c", "e.co" + "m" * 70,
        "l" * 64 + ".com", "ünï.de", "corp.invalid", "ns.arpa", "tor.onion", "x_y.com",
    ]  # fmt: skip
    answered = 0
    for _ in range(20_000):
        local = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 3)))
        text = f"{local}@{rng.choice(domains)}"
        fast = _plain_email(text)
        if fast is not None:
            answered += 1
            assert fast == _validated(text), text
            assert email_normal(text) == fast
        else:
            assert email_normal(text) == _validated(text), text
    assert answered > 1_000  # the fast path really is taken for plain addresses

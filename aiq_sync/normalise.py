"""Field normalisers shared by every connector.

Each works on one value and is cached, because a sync sees the same phone, email or name
many times (one line per item). The phone and e-mail caches hold one entry per distinct
customer value, which makes them most of a load's Python memory: they use `_memo`, about
half the bytes per entry of `lru_cache`. Nothing here needs pandas (though pyarrow imports
it, when installed, on its first `pa.array` call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache, wraps
from typing import TypeVar
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from phonenumbers import PhoneNumberType

T = TypeVar("T")

DEFAULT_REGION = "US"
_NANP = {"US", "CA"}  # regions whose 10-digit national numbers are +1 numbers


def _memo(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Cache a normaliser of (raw[, region]) in a plain dict of at most `maxsize` entries.

    Unlike `lru_cache` there is no linked-list node per entry (~100 bytes); when full the
    dict is emptied, which keeps it bounded at amortised O(1) (validating a value again is
    cheap next to keeping every value of a 10M-line source)."""

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        memo: dict[Hashable, T] = {}

        @wraps(func)
        def cached(raw: Hashable, region: str = DEFAULT_REGION) -> T:
            key = raw if region == DEFAULT_REGION else (raw, region)
            try:
                return memo[key]
            except KeyError:
                pass
            result = func(raw) if region == DEFAULT_REGION else func(raw, region)
            if len(memo) >= maxsize:
                memo.clear()
            memo[key] = result
            return result

        cached.cache_clear = memo.clear  # type: ignore[attr-defined]  # as lru_cache has
        return cached

    return decorate


@_memo(maxsize=500_000)
def phone_e164(raw: str | None, region: str = DEFAULT_REGION) -> str | None:
    """A valid phone number in E.164, or None. Region US by default (Canada shares +1)."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text or sum(ch.isdigit() for ch in text) < 7:
        return None
    if (
        region in _NANP
        and text.isdigit()
        and (len(text) == 10 or (len(text) == 11 and text[0] == "1"))
    ):
        # POS files send bare digits: skip the general parser (half the cost), keep validation.
        parsed = phonenumbers.PhoneNumber(country_code=1, national_number=int(text[-10:]))
        if not phonenumbers.is_valid_number(parsed):
            return None
        return "+1" + text[-10:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_NO_SMS = {
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
}


@lru_cache(maxsize=500_000)
def sms_capable(e164: str | None) -> bool:
    """Whether an E.164 number can receive SMS: toll-free and service numbers cannot."""
    if not e164:
        return False
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) not in _NO_SMS


# The plain addresses almost every customer has (ASCII atoms, dotted domain, alphabetic
# top-level domain): email_validator takes ~100 us each and always accepts them unchanged
# but for case, so they skip it. Anything else, or a reserved top-level domain, goes
# through it (tests/test_normalise.py compares the two paths on generated addresses).
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9]+(?:[._+-][a-z0-9]+)*@(?:[a-z0-9]+(?:-[a-z0-9]+)*\.)+([a-z]{2,63})"
)
_SPECIAL_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(text: str) -> str | None:
    lowered = text.lower()
    if (
        not text.isascii()
        or len(lowered) > 254
        or (match := _PLAIN_EMAIL.fullmatch(lowered)) is None
    ):
        return None
    local, _, domain = lowered.partition("@")
    if len(local) > 64 or match.group(1) in _SPECIAL_TLDS:
        return None
    if any(len(label) > 63 for label in domain.split(".")):
        return None
    return lowered


@_memo(maxsize=500_000)
def email_normal(raw: str | None) -> str | None:
    """A syntactically valid e-mail address, lower-cased, or None. No DNS look-ups."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text or "@" not in text:
        return None
    if (plain := _plain_email(text)) is not None:
        return raw if plain == raw else plain
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    normal = result.normalized.lower()
    return raw if normal == raw else normal  # the same object: cached once, not twice


_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "v"}
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=16_384)  # cheap to recompute: a full cache held ~30 MB per 125k names
def split_name(raw: str | None) -> tuple[str | None, str | None]:
    """'Ana Maria Lopez' -> ('Ana', 'Maria Lopez'); 'Lopez, Ana' -> ('Ana', 'Lopez');
    'John Smith, Jr.' -> ('John', 'Smith, Jr.'). Blank parts become None."""
    if raw is None:
        return None, None
    text = _SPACES.sub(" ", str(raw)).strip()
    if not text:
        return None, None
    if "," in text:
        head, tail = (part.strip() for part in text.split(",", 1))
        if tail and tail.lower() not in _SUFFIXES and " " not in head:
            return tail or None, head or None
    first, _, last = text.partition(" ")
    return first or None, last.strip() or None


def clean_text(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = _SPACES.sub(" ", str(raw)).strip()
    return text or None


_MONEY = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)?(\.\d+)?$")
# Money and quantities are DECIMAL(18,4) in the warehouse (14 digits before the point). An
# amount of a trillion or more is a broken export, not a price; refusing it here quarantines
# the row (naming the field) and leaves headroom for sale totals summed from lines, instead
# of failing the whole load on DuckDB's cast.
MAX_ABS_AMOUNT = Decimal(10) ** 12
OUT_OF_RANGE = "out of range"


def check_amount(value: Decimal, raw: object = None) -> Decimal:
    """`value` if it is a finite amount below MAX_ABS_AMOUNT; else ValueError."""
    if not value.is_finite():
        raise ValueError(f"not a number: {raw if raw is not None else value!r}")
    if abs(value) >= MAX_ABS_AMOUNT:
        raise ValueError(
            f"{OUT_OF_RANGE}: {raw if raw is not None else value!r} (at most 12 digits before "
            "the decimal point)"
        )
    return value


@lru_cache(maxsize=200_000)
def parse_decimal(raw: str | None) -> Decimal | None:
    """'1,234.50', '$12.00', '-3' -> Decimal; blank -> None; anything else raises ValueError."""
    if raw is None:
        return None
    text = str(raw).strip().replace("$", "", 1)
    if not text:
        return None
    if text.startswith("(") and text.endswith(")"):  # accounting negative
        text = "-" + text[1:-1]
    if not _MONEY.match(text) or text in {"+", "-", "."}:
        raise ValueError(f"not a number: {raw!r}")
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {raw!r}") from exc
    return check_amount(value, raw)


_DATE_FORMATS = ("%Y/%m/%d", "%Y-%m-%d", "%m/%d/%Y")


@lru_cache(maxsize=100_000)
def parse_date(raw: str | None) -> date | None:
    """'2024/03/05', '2024-03-05' (and US '03/05/2024') -> date; blank -> None; else ValueError."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date: {raw!r}")


def local_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """A source-local wall time -> UTC. In the repeated hour of a fall-back the first of the
    two (daylight) times is meant; a time in a spring-forward gap, which no clock showed,
    moves forward to the end of the gap (the moment the clocks jumped)."""
    utc = naive.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first of a repeated hour
    if utc.astimezone(tz).replace(tzinfo=None) == naive:
        return utc
    # In a gap, fold=0 reads the time with the offset before the jump (too late) and fold=1
    # with the one after it (too early): the jump lies between them, found to the second.
    early = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    before = early.astimezone(tz).utcoffset()
    lo, hi = 0, int((utc - early).total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (early + timedelta(seconds=mid)).astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return early + timedelta(seconds=hi)

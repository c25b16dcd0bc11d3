"""Compare contact details the way customers write them, for identity checks in domain actions.

A customer types "+49 151 2345 6789", "0151 23456789" or "4915123456789" for the same phone, and
"Anna.Schmidt@Example.com" for the address on file: a check that compares raw text refuses the
real owner. These helpers accept those spellings and nothing looser (a number must be complete,
only a 1-3 digit country code or a national trunk 0 may differ).
"""

from __future__ import annotations

import re

_NON_DIGIT = re.compile(r"\D")
MIN_NATIONAL_DIGITS = 7


def same_email(given: str | None, on_file: str | None) -> bool:
    """Addresses are compared case-insensitively and without surrounding spaces."""
    if not given or not on_file:
        return False
    return given.strip().casefold() == on_file.strip().casefold()


def _split_phone(raw: str) -> tuple[str, bool]:
    """Digits of a phone number, and whether it was written in international form (+cc / 00cc)."""
    text = raw.strip()
    digits = _NON_DIGIT.sub("", text)
    if text.startswith("+"):
        return digits, True
    if digits.startswith("00"):
        return digits[2:], True
    return digits, False


def same_phone(given: str | None, on_file: str | None) -> bool:
    """True when both name the same line, whatever the spacing and international/national form.

    International vs national: the national number, without its trunk 0, must be the
    international number minus a country code of 1-3 digits. Two national numbers match when
    equal with or without the trunk 0. A fragment (the last digits) never matches.
    """
    if not given or not on_file:
        return False
    a, a_international = _split_phone(given)
    b, b_international = _split_phone(on_file)
    if len(a) < MIN_NATIONAL_DIGITS or len(b) < MIN_NATIONAL_DIGITS:
        return False
    if a == b:
        return True
    if a_international and b_international:
        return False
    if not a_international and not b_international:
        return a.lstrip("0") == b.lstrip("0") and len(a.lstrip("0")) >= MIN_NATIONAL_DIGITS
    international, national = (a, b) if a_international else (b, a)
    national = national.removeprefix("0")
    country_code = len(international) - len(national)
    return len(national) >= MIN_NATIONAL_DIGITS and 1 <= country_code <= 3 and international.endswith(national)

"""Phone numbers: normalising what people type into the E.164 digits we store and send to.

Stored form: the country code and subscriber number as digits only, without `+`
("919876543210"), the form Graph's `to` takes and the suppression list is keyed by.
"""

from __future__ import annotations

import re

# Separators people type inside numbers; anything else that is not a digit is an error.
_SEPARATORS = re.compile(r"[\s\-().]")
_DIGITS = re.compile(r"[0-9]+")
MIN_DIGITS, MAX_DIGITS = 8, 15


class InvalidPhone(ValueError):
    """Why a number is not an E.164 number (the message is meant for the person who typed it)."""


def normalize(raw: str) -> str:
    """E.164 digits of `raw`: separators stripped, then a leading `+` or `00` (international prefix).

    Rejected: letters or other symbols, a `+` anywhere but first, fewer than 8 or more than
    15 digits, and a leading 0 after the prefix (a national number without its country code).
    """
    if not isinstance(raw, str):
        raise InvalidPhone("phone must be a string")
    text = _SEPARATORS.sub("", raw)
    if not text:
        raise InvalidPhone("phone is empty")
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    if not _DIGITS.fullmatch(text):
        raise InvalidPhone("phone may hold only digits, a leading + and spaces, dashes, dots or parentheses")
    if text.startswith("0"):
        raise InvalidPhone("phone must start with the country code (E.164), not 0")
    if not MIN_DIGITS <= len(text) <= MAX_DIGITS:
        raise InvalidPhone(f"phone must have {MIN_DIGITS} to {MAX_DIGITS} digits with the country code, "
                           f"not {len(text)}")
    return text

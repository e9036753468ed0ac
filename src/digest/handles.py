"""Handles: the short names an editor types to refer to an entry (`digest hide 1b7q`).

A handle is the entry's id in Crockford's base32 (lower case, at least three digits) and a
check digit (Luhn mod 32). It is stable (the id never changes), short (four characters up to
32,767 entries, five up to a million), typed without a shift key, and a mistyped handle (one
character wrong, or two neighbours swapped) is refused rather than taken for another entry.
Reading forgives case and Crockford's look-alikes (i and l for 1, o for 0).
"""

from __future__ import annotations

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_VALUE = {char: value for value, char in enumerate(ALPHABET)} | {"i": 1, "l": 1, "o": 0}
_MIN_DIGITS = 3
MAX_ENTRY_ID = 2**63 - 1  # the databases' largest integer: a longer handle names no entry


def handle_of(entry_id: int) -> str:
    if entry_id < 0:
        raise ValueError(f"entry ids are not negative: {entry_id}")
    digits = []
    while True:
        entry_id, digit = divmod(entry_id, 32)
        digits.append(digit)
        if entry_id == 0:
            break
    values = [0] * (_MIN_DIGITS - len(digits)) + digits[::-1]
    return "".join(ALPHABET[v] for v in [*values, _check_digit(values)])


def entry_id_of(handle: str) -> int | None:
    """The entry id a handle names; None when it is no handle (a typo)."""
    text = handle.strip().lower()
    if len(text) < _MIN_DIGITS + 1 or any(char not in _VALUE for char in text):
        return None
    values = [_VALUE[char] for char in text]
    *body, check = values
    if _check_digit(body) != check:
        return None
    entry_id = 0
    for value in body:
        entry_id = entry_id * 32 + value
    return entry_id if entry_id <= MAX_ENTRY_ID else None


def _check_digit(values: list[int]) -> int:
    """Luhn mod 32: catches every single wrong digit and most swaps of neighbours."""
    total, factor = 0, 2
    for value in reversed(values):
        addend = factor * value
        total += addend // 32 + addend % 32
        factor = 3 - factor
    return (32 - total % 32) % 32

"""Reading and showing the values a user gives (inventory vars, extra vars, API bodies).

Inventory values may be strings where a number or a boolean is meant; messages show a bad value
as its repr(), cut to a readable length.
"""

from __future__ import annotations

import re

from .errors import SpecError

INT_RE = re.compile(r"-?[0-9]+", re.ASCII)
BOOL_STRINGS = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
_MAX_REPR = 80


def show(value) -> str:
    """repr() of a user value for messages, truncated; plain types for str/int subclasses."""
    if isinstance(value, bool):
        text = repr(bool(value))
    elif isinstance(value, str):
        text = repr(str(value))
    elif isinstance(value, int):
        text = repr(int(value))
    else:
        text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return text


def join_names(names) -> str:
    return ", ".join(sorted(str(n) for n in names))


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_list(value) -> bool:
    return isinstance(value, list | tuple)


def to_int(digits: str) -> int:
    """int() of an ASCII digit string, clamped so absurdly long input cannot trip Python's digit limit."""
    negative = digits.startswith("-")
    if len(digits.lstrip("-")) > 18:
        return -(10**18) if negative else 10**18
    return int(digits)


def as_int(value, field: str, what: str) -> int:
    """Accept an int or a string of digits (inventory vars may be strings); reject bools and floats."""
    if is_int(value):
        return int(value)
    if isinstance(value, str) and INT_RE.fullmatch(value.strip()):
        return to_int(value.strip())
    raise SpecError(field, f"{show(value)} is not an integer; {what}")


def as_bool(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
        return BOOL_STRINGS[value.strip().lower()]
    raise SpecError(field, f"{show(value)} is not a boolean; use true or false")

"""The error every domain rule raises, and its translation for callers with their own error type."""

from __future__ import annotations

import functools
from collections.abc import Callable


class SpecError(ValueError):
    """A tenant specification (or ShadowDB configuration) is invalid.

    ``field`` is the dotted path of the offending input, e.g. ``tenant.name``.
    ``str(exc)`` is the full message, which starts with ``"<field>: "``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):
        # Keep SpecError picklable (worker processes) despite the two-argument constructor.
        return (type(self), (self.field, self.reason))


def raising(error: type[Exception], func: Callable) -> Callable:
    """``func`` with every ValueError it raises (SpecError included) re-raised as ``error`` with the
    same message: the Ansible filter plugins pass their AnsibleFilterError, so this package never
    imports Ansible."""

    @functools.wraps(func)
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ValueError as exc:
            raise error(str(exc)) from None

    return call

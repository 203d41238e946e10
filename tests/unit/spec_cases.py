"""What the unit tests of the shadowdb package share: checks of a SpecError, a custom tier table."""

from __future__ import annotations

import pytest

from shadowdb.errors import SpecError

# A deployment's own tier table, replacing the default one.
TINY = {
    "tiny": {
        "disk_size_mb": 300,
        "memory_mb": 128,
        "cpu_quota_pct": 25,
        "max_connections": 500,
        "nofile": 512,
        "tasks_max": 64,
    }
}


def raises_spec_error(func, *args, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        func(*args, **kwargs)
    return info.value


def assert_spec_error(exc: SpecError, field: str, value=None, *fragments: str) -> None:
    """The field is right, the message names the field then the bad value, and says what is allowed."""
    assert exc.field == field
    message = str(exc)
    assert message.startswith(f"{field}: "), message
    if value is not None:
        assert message.startswith(f"{field}: {value!r}"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"

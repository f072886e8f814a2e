"""Fixtures shared by the engine tests."""

from __future__ import annotations

from typing import Any

import pytest

from flowbus.flows import fastrecord


@pytest.fixture
def short_statements(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What each guarded statement of the PostgreSQL short record returned: the attempt of the step
    entered (1 when none is), or None when its guard failed and nothing was written."""
    results: list[Any] = []
    original = fastrecord._write

    async def spy(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(fastrecord, "_write", spy)
    return results

"""Fixtures shared by the engine tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowbus.flows import fastrecord


@pytest.fixture
def returns_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[Any]]:
    """``returns_of(owner, name)``: from now on, the list of what each call of the coroutine function
    ``owner.name`` (a module's function, or a class's method) returned, in call order."""
    def spy_on(owner: Any, name: str) -> list[Any]:
        results: list[Any] = []
        original = getattr(owner, name)

        async def spy(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            results.append(result)
            return result

        monkeypatch.setattr(owner, name, spy)
        return results

    return spy_on


@pytest.fixture
def short_statements(returns_of: Callable[[Any, str], list[Any]]) -> list[Any]:
    """What each guarded statement of the PostgreSQL short record returned: the attempt of the step
    entered (1 when none is), or None when its guard failed and nothing was written."""
    return returns_of(fastrecord, "_write")

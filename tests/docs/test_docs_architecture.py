"""docs/architecture.md stays true: every module of the package is in the module map, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_is_in_the_module_map():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(flowbus/[\w/]+\.py)`", text))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "flowbus").rglob("*.py")
               if not (p.name == "__init__.py" and not p.read_text(encoding="utf-8").strip())}
    assert modules - listed == set(), f"modules missing from docs/architecture.md: {sorted(modules - listed)}"
    assert listed - modules == set(), f"docs/architecture.md lists modules that do not exist: {sorted(listed - modules)}"

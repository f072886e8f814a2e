"""The test suite's loopback server helper, reused by the benchmarks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_flowbus_tests_conftest",
                                               Path(__file__).resolve().parents[1] / "tests" / "conftest.py")
_mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_mod)  # type: ignore[union-attr]
start_server = _mod.start_server

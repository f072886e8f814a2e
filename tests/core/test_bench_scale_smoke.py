"""bench/bench_scale.py runs end to end on a tiny store (the real run is by hand: see its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scale_bench_populates_measures_and_verifies(tmp_path):
    def run() -> str:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scale.py"), "--documents", "300",
                               "--repeat", "3", "--data-dir", str(tmp_path / "store")],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    first = run()
    assert "populating 300 documents over 733 entities" in first
    assert "store: 301 documents" in first and "its journal (GET …/journal)" in first
    assert " 0 break(s)" in first and "raw SHA-256 of 200-byte messages" in first
    second = run()  # the store is reused: not populated again
    assert "populating" not in second and "store: 3" in second and " 0 break(s)" in second

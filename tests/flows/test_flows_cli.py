"""``flowbus flows validate`` and ``flowbus flows graph`` as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowbus.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_validate_shipped_flows_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["flows", "validate", str(ROOT / "config" / "flows"),
                 "--connectors", str(ROOT / "config" / "demo")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("OK: ") and "deliberation" in out and "connector instances" in out


def test_validate_reports_every_error_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "rh.yml").write_text(textwrap.dedent("""\
        id: rh
        label: "RH"
        fields:
          - {name: objet, type: text, label: "Objet"}
        steps:
          - id: sign
            label: "Signature"
            family: signtaure
            connector: parapheurr
            when: fields.objt
            timout: 2m
        """), encoding="utf-8")
    connectors = tmp_path / "connectors"
    connectors.mkdir()
    (connectors / "c.yml").write_text("instances:\n  - {id: parapheur, family: signature, kind: test}\n",
                                      encoding="utf-8")
    code = main(["flows", "validate", str(flows), "--connectors", str(connectors)])
    out = capsys.readouterr().out.splitlines()
    path = flows / "rh.yml"
    assert code == 1
    assert out == [
        f'{path}:8:13: step "sign": unknown connector family "signtaure" — did you mean "signature"?',
        f'{path}:9:16: step "sign": unknown connector instance "parapheurr" — did you mean "parapheur"?',
        f'{path}:10:11: step "sign": condition names unknown field "objt" — did you mean "objet"?',
        f'{path}:11:5: step "sign": unknown key "timout" — did you mean "timeout"?',
    ]


def test_validate_without_instances_skips_the_instance_check(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yml").write_text('id: a\nlabel: "A"\nsteps:\n  - {id: s, label: "S", family: sae, '
                                    'connector: nimporte}\n', encoding="utf-8")
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["flows", "validate", str(tmp_path / "a.yml"), "--connectors", str(empty)]) == 0
    assert capsys.readouterr().out.startswith("OK: 1 flow valid (a)")


def test_validate_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flows", "validate", str(tmp_path / "absent.yml")]) == 1
    assert "no such file or directory" in capsys.readouterr().out


def test_graph_by_path_and_by_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flows", "graph", str(ROOT / "config" / "flows" / "pes.yml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD") and "Transmission à la trésorerie (PES)" in out
    result = subprocess.run([sys.executable, "-m", "flowbus", "flows", "graph", "rh-paie"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "FLOWBUS_CONFIG_DIR": str(ROOT / "config")})
    assert result.returncode == 0, result.stderr
    assert "Envoi sécurisé du bulletin à l'agent" in result.stdout
    assert main(["flows", "graph", "rh-pai"]) == 1
    assert 'did you mean "rh-paie"?' in capsys.readouterr().err

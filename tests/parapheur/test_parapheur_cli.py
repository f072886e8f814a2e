"""``flowbus parapheur …`` commands against a fresh SQLite store."""

from __future__ import annotations

from pathlib import Path

from flowbus.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_parapheur_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLOWBUS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("FLOWBUS_CONFIG_DIR", str(ROOT / "config"))
    monkeypatch.setenv("FLOWBUS_SIGNER_PASSWORD", "un-mot-de-passe-long")
    assert main(["parapheur", "demo", "--name", "Commune de Test"]) == 0
    entity = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("entity "))
    assert main(["parapheur", "list", "--entity", entity]) == 0
    listing = capsys.readouterr().out
    desks = {line.split("  ", 1)[1].split(":")[0]: line.split()[1] for line in listing.splitlines()
             if line.startswith("desk ")}
    assert set(desks) == {"Directeur général des services", "Maire", "Premier adjoint"}
    assert "circuit « Délibérations »: Visa → Signature" in listing

    assert main(["parapheur", "desk-add", "--entity", entity, "--name", "Secrétariat"]) == 0
    assert main(["parapheur", "signer-add", "--entity", entity, "--login", "anne", "--name", "Anne Morel",
                 "--desk", desks["Maire"]]) == 0
    assert main(["parapheur", "circuit-add", "--entity", entity, "--name", "Arrêtés", "--step",
                 f"visa:{desks['Directeur général des services']}", "--step", f"signature:{desks['Maire']}",
                 "--step", "external:Préfet de région:prefet@example.gouv.fr"]) == 0
    assert main(["parapheur", "delegate", "--from", desks["Maire"], "--to", desks["Premier adjoint"],
                 "--start", "2026-07-01", "--end", "2026-07-15"]) == 0
    capsys.readouterr()
    assert main(["parapheur", "circuit-add", "--entity", entity, "--name", "Faux", "--step", "external:X"]) == 1
    assert "an external signature cannot be the first step" in capsys.readouterr().out
    assert main(["parapheur", "delegate", "--from", desks["Maire"], "--to", desks["Maire"], "--start", "2026-07-01",
                 "--end", "2026-07-02"]) == 1
    assert "[field to_desk]" in capsys.readouterr().out
    assert main(["parapheur", "list", "--entity", entity]) == 0
    listing = capsys.readouterr().out
    assert "Anne Morel (anne)" in listing
    assert f"delegated to {desks['Premier adjoint']} from 2026-07-01 to 2026-07-15" in listing
    assert "circuit « Arrêtés »: Visa → Signature → Signature de Préfet de région" in listing

"""``flowbus init``, ``flowbus users …`` and ``flowbus doctor``'s people checks against a fresh SQLite store."""

from __future__ import annotations

import re
from pathlib import Path

from flowbus.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_init_and_users_commands(tmp_path, monkeypatch, capsys):
    # the commands configure logging to the process's stderr; here that is capsys's, closed after the test
    monkeypatch.setattr("flowbus.log.configure", lambda *a, **k: None)
    monkeypatch.setenv("FLOWBUS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("FLOWBUS_CONFIG_DIR", str(ROOT / "config"))
    monkeypatch.setenv("FLOWBUS_PUBLIC_URL", "https://flowbus.syndicat.fr")
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "login 'admin'" in out
    first = re.search(r"https://flowbus\.syndicat\.fr/mot-de-passe/nouveau/\S+", out)
    assert first, out
    assert main(["init"]) == 0
    assert "mot-de-passe/nouveau" not in capsys.readouterr().out  # created once

    # doctor: the administrator has no password yet, and no platform e-mail is configured
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[KO] personnes: l'administrateur de la plateforme n'a pas encore choisi son mot de passe" in out
    assert "flowbus users reset-password admin" in out
    assert "[KO] courriel de la plateforme: aucun serveur SMTP" in out

    assert main(["users", "create", "agent.rh", "--name", "Agnès Roux", "--email", "agnes@commune.fr",
                 "--grant", "*=editor:rh-paie,rh-contrat"]) == 0
    out = capsys.readouterr().out
    assert "Account agent.rh created" in out and "/mot-de-passe/nouveau/" in out
    assert main(["users", "create", "agent.rh", "--name", "Autre", "--email", "autre@commune.fr"]) == 1
    assert "déjà pris" in capsys.readouterr().err
    assert main(["users", "create", "Mauvais Login", "--name", "X", "--email", "x@commune.fr"]) == 1
    assert "Identifiant invalide" in capsys.readouterr().err
    assert main(["users", "list"]) == 0
    listing = capsys.readouterr().out
    assert "agent.rh\tAgnès Roux\tagnes@commune.fr\tactive\t*=editor:rh-paie,rh-contrat" in listing
    assert "admin\tAdministrateur de la plateforme" in listing
    assert main(["users", "reset-password", "agent.rh"]) == 0
    assert "/mot-de-passe/nouveau/" in capsys.readouterr().out
    assert main(["users", "reset-password", "personne"]) == 1
    assert main(["users", "deactivate", "agent.rh"]) == 0
    capsys.readouterr()
    assert main(["users", "list"]) == 0
    assert "agent.rh\tAgnès Roux\tagnes@commune.fr\tinactive" in capsys.readouterr().out

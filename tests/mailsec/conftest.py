"""Mailsec fixtures: a real SMTP server on loopback, a config dir wiring the mailsec instance to it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/mail/[A-Za-z0-9_-]{43})")
PASSWORD = re.compile(r"^ {4}([A-Za-z0-9]{14})\r?$", re.MULTILINE)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

WAIT_FLOW = """
id: courrier-lu
label: "Courrier à lire"
fields:
  - {name: objet, type: text, label: "Objet", required: true}
  - {name: destinataires, type: text, label: "Destinataires", required: true}
  - {name: piece, type: file, label: "Pièce", required: true}
  - {name: mailsec_reponses, type: files, label: "Réponses"}
  - {name: mailsec_accuses, type: file, label: "Accusés de lecture"}
steps:
  - id: envoi
    label: "Envoi sécurisé"
    family: mailsec
    connector: mailsec
    params:
      to: [destinataires]
      cc: [copie@mairie.example.fr]
      files: [piece]
      wait_for_read: true
      check_every: 1s
      remind_every: 2d
      max_reminders: 2
      deadline: 10d
      subject: "Objet : {{ fields.objet }}"
    on: {unread: {state: non_lu}}
states:
  non_lu: {label: "Non lu dans le délai", terminal: true}
"""


@pytest.fixture
def smtp() -> Iterator[SmtpSimulator]:
    with SmtpSimulator(refuse={"refuse@agents.example.fr": "550 5.1.1 Adresse inconnue"}) as sim:
        yield sim


@pytest.fixture
def mailsec_config(tmp_path: Path, smtp: SmtpSimulator) -> Path:
    """config/ with the shipped rh-paie flow, a wait-for-read flow, and mailsec wired to ``smtp``."""
    cfg = tmp_path / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    shutil.copy(ROOT / "config" / "flows" / "rh-paie.yml", cfg / "flows" / "rh-paie.yml")
    shutil.copytree(ROOT / "config" / "mailsec", cfg / "mailsec")  # the shipped payslip templates
    (cfg / "flows" / "courrier-lu.yml").write_text(WAIT_FLOW, encoding="utf-8")
    (tmp_path / "rebonds" / "new").mkdir(parents=True)
    instances: list[dict[str, Any]] = [
        {"id": "mailsec", "family": "mailsec", "kind": "smtp", "entity": None,
         "settings": {"host": "127.0.0.1", "port": smtp.port, "starttls": False,
                      "from_address": "ne-pas-repondre@mairie.example.fr", "from_name": "Mairie de Test",
                      "bounce_address": "rebonds@mairie.example.fr",
                      "bounce_maildir": str(tmp_path / "rebonds"), "link_ttl": "30d"}},
        {"id": "sae", "family": "sae", "kind": "test", "entity": None, "settings": {}},
    ]
    (cfg / "connectors" / "mailsec.yml").write_text(yaml.safe_dump({"instances": instances}), encoding="utf-8")
    return cfg


def links_to(smtp: SmtpSimulator, address: str) -> list[str]:
    return [m for r in smtp.to(address) for m in LINK.findall(r.text())]


@pytest.fixture
def ms() -> SimpleNamespace:
    """Helpers for the mailsec tests (conftest modules are not importable in importlib mode)."""
    return SimpleNamespace(LINK=LINK, PASSWORD=PASSWORD, CHROMIUM_ARGS=CHROMIUM_ARGS, links_to=links_to,
                           WAIT_FLOW=WAIT_FLOW)

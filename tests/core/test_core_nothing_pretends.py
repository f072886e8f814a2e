"""A real install never reports a success it did not obtain: no test connector outside the demonstration, a
step without its connector puts the document in a visible French error, `flowbus doctor` says what is
missing per connector and collectivité."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from tests.support.pdfs import pdf

ROOT = Path(__file__).resolve().parents[2]


async def _one(data: bytes):
    yield data


async def _deliberation(rt, entity_id):
    doc = await documents.create_document(rt, entity_id=entity_id, flow_id="deliberation", actor="t", fields={
        "objet": "Budget", "nature": "1", "numero_acte": "DEL2026_1", "date_decision": "2026-11-30",
        "classification": "7.1", "envoi_signature": False, "envoi_sae": False})
    await documents.attach_file(rt, doc.id, "arrete", filename="acte.pdf", media_type="application/pdf",
                                chunks=_one(pdf("acte")), actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    return doc


@pytest.mark.parametrize("backend", ["embedded", "scaleout"], indirect=True)
async def test_a_bare_install_sends_nothing_and_says_which_connector_is_missing(backend, runtime_factory,
                                                                                 wait_state):
    rt = await runtime_factory(backend, demo=False)  # the shipped config/, as `flowbus init` + `serve` run it
    assert not rt.instances.ids, "a real install binds no connector"
    commune = await create_entity(rt, name="Commune Réelle", siren=None, parent=None, actor_name="t")
    doc = await _deliberation(rt, commune.id)
    err = await wait_state(rt, doc.id, "error", timeout=30)
    assert err.step == "tdt"
    assert err.last_error.startswith("Connecteur non configuré pour « Commune Réelle » : télétransmission ACTES "
                                     "(instance « tdt-actes » de l'étape « Télétransmission en préfecture (ACTES) »)")
    assert not err.files_of("aractes"), "no AR was invented"


async def test_a_test_connector_is_refused_outside_the_demonstration(runtime_factory, engine_config, wait_state,
                                                                    server_factory):
    rt = await runtime_factory("embedded", config_dir=engine_config, demo=False)
    commune = await create_entity(rt, name="Commune Stricte", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=commune.id, flow_id="four", fields={"title": "x"},
                                          actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    err = await wait_state(rt, doc.id, "error", timeout=30)
    assert "Connecteur de test « ok » (test) refusé" in err.last_error and "serve --demo" in err.last_error
    srv = await server_factory(rt)
    async with srv.client() as api:
        r = await api.put("/api/v1/connectors/notif", json={"family": "notify", "kind": "test", "entity": None,
                                                            "settings": {}})
        assert r.status == 422, await r.text()
        assert "Connecteur de test « notif » (test) refusé" in (await r.json())["detail"]


def test_doctor_lists_what_a_bare_install_lacks(tmp_path):
    env = {**os.environ, "FLOWBUS_DATA_DIR": str(tmp_path / "var"), "FLOWBUS_CONFIG_DIR": str(ROOT / "config"),
           "FLOWBUS_DEMO": "false"}
    env.pop("FLOWBUS_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "flowbus", "init"], env=env, capture_output=True, check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "flowbus", "doctor"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stdout
    assert "Tout est prêt." not in out.stdout and "problème(s) trouvé(s)." in out.stdout
    assert "[KO] connecteur tdt-actes: connecteur « tdt-actes » (télétransmission ACTES) des flux " \
           "Annulation d'un acte transmis, Courrier de la préfecture, Délibération / arrêté : configuré pour aucune " \
           "collectivité" in out.stdout, out.stdout
    assert "[KO] profil d'archivage deliberation/sae: archival_agency, archival_agreement, archival_profile : encore " \
           "l'exemple du profil, renseigné par aucun connecteur SAE (rien ne sera versé)" in out.stdout, out.stdout
    demo = subprocess.run([sys.executable, "-m", "flowbus", "doctor"], env={**env, "FLOWBUS_DEMO": "true"},
                          capture_output=True, text=True, timeout=120)
    assert "[ok] connecteur tdt-actes: " in demo.stdout and "toute la plateforme" in demo.stdout, demo.stdout


@pytest.mark.parametrize("name, value, says", [
    ("FLOWBUS_DATABASE_URL", "mysql://u:p@db/flowbus", "FLOWBUS_DATABASE_URL « mysql:… » n'est pas prise en charge"),
    ("FLOWBUS_BUS_URL", "amqq://guest:guest@127.0.0.1:5672/", "FLOWBUS_BUS_URL « 127.0.0.1:5672/ » n'est pas prise"),
])
def test_a_mistyped_backend_url_stops_the_start_instead_of_falling_back(tmp_path, name, value, says):
    env = {**os.environ, "FLOWBUS_DATA_DIR": str(tmp_path / "var"), name: value}
    for cmd in (["doctor"], ["init"]):
        out = subprocess.run([sys.executable, "-m", "flowbus", *cmd], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"flowbus: réglage invalide {name} : {says}" in out.stderr, out.stderr
        assert not (tmp_path / "var" / "flowbus.sqlite3").exists(), "no SQLite created in its place"


async def test_a_step_that_fails_is_logged_as_a_warning(runtime_factory, engine_config, wait_state):
    import structlog
    with structlog.testing.capture_logs() as logs:
        rt = await runtime_factory("embedded", config_dir=engine_config)
        commune = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
        doc = await documents.create_document(rt, entity_id=commune.id, flow_id="broken", fields={"title": "x"},
                                              actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        await wait_state(rt, doc.id, "error", timeout=30)
    finished = [e for e in logs if e["event"] == "step.finished" and e.get("document_id") == doc.id]
    assert finished and all(e["log_level"] == "warning" and e["error"] for e in finished), finished

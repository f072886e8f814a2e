"""The shipped PES flow on both backend sets: the entity's seal signs every bordereau of the PES_Aller
(XAdES, Hélios policy), and the next step — Hélios through the S²LOW simulator — receives the signed file."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from flowbus import demo, documents
from flowbus.api.entities import create_entity
from flowbus.connectors.tdt.helios import inspect_pes
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator
from flowbus.signature.pki import make_test_pki
from flowbus.signature.verify import verify

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / ".." / "shared" / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"


def _config(tmp_path: Path, pki, s2low_url: str) -> Path:
    cfg = tmp_path / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    shutil.copy(ROOT / "config" / "flows" / "pes.yml", cfg / "flows" / "pes.yml")
    (cfg / "connectors" / "c.yml").write_text(
        "instances:\n"
        f"  - {{id: parapheur, family: signature, kind: seal, entity: null, "
        f"settings: {{p12_path: '{pki.seal_p12}', p12_password: flowbus, role: Ordonnateur}}}}\n"
        f"  - {{id: tdt-helios, family: tdt-helios, kind: s2low, entity: null, settings: {{url: '{s2low_url}'}}}}\n"
        "  - {id: sae, family: sae, kind: test, entity: null, settings: {}}\n")
    return cfg


async def test_pes_signed_by_the_seal_then_sent_signed(backend, runtime_factory, tmp_path, wait_state):
    pki = make_test_pki(tmp_path / "pki")
    sim = S2lowSimulator(delays={"pes_transmit": timedelta(milliseconds=200),
                                 "pes_acquit": timedelta(milliseconds=500)})
    await sim.start()
    try:
        rt = await runtime_factory(backend, config_dir=_config(tmp_path, pki, sim.url))
        demo.accelerate(rt, timedelta(seconds=1))  # the shipped flow checks Hélios every 30 minutes
        ent = await create_entity(rt, name="Commune de Démo", siren=None, parent=None, actor_name="t")
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="pes", actor="t", fields={
            "objet": "Mandats de novembre", "envoi_signature": True, "envoi_tdt": True, "envoi_sae": True})
        # a PES to be signed declares its bordereaux dematerialised (InfoDematerialisee=1)
        original = SAMPLE.read_bytes().replace(b'InfoDematerialisee V="0"', b'InfoDematerialisee V="1"')

        async def chunks():
            yield original

        await documents.attach_file(rt, doc.id, "pes_aller", filename="PES.xml", media_type="application/xml",
                                    chunks=chunks(), actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        done = await wait_state(rt, doc.id, "done", timeout=60)

        signed = await rt.blobs.read(done.files_of("pes_aller")[0].blob_key)
        assert signed != original
        results = verify(signed, trusted=[pki.ca.certificate])
        bordereaux = inspect_pes(signed).bordereaux
        assert len(results) == len(bordereaux) >= 1
        assert all(r.ok and r.intact and "Cachet serveur" in r.signer for r in results)
        # the next step received the signed file: it is what Hélios (the simulator) got
        [sent] = list(sim.pes.values())
        assert sent.content == signed
        assert done.fields["pes_acquit_ok"] is True
    finally:
        await sim.stop()

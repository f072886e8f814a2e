"""``serve --demo`` seeding, in process: every shipped flow's document goes through the real connectors
and the project's simulators (S²LOW, i-Parapheur, SMTP, TSA) to ``done``; a second seeding, after a
restart of the simulators, creates nothing new."""

from __future__ import annotations

import io
import time
from typing import Any

import aiohttp
import pytest

from flowbus import demo
from flowbus.connectors.tdt.actes_messages import parse_message
from flowbus.connectors.tdt.helios import inspect_pes, parse_pes_acquit

FAST = demo.DemoTiming(approve_after=1.0, transmit=0.3, ar=0.5, check_every=0.5)
SHIPPED = {"demo", "deliberation", "pes", "rh-contrat", "rh-paie", "cimetiere"}


@pytest.fixture
async def sims(tmp_path: Any) -> Any:
    running: list[demo.DemoSimulators] = []

    async def start() -> demo.DemoSimulators:
        s = await demo.start_simulators(tmp_path / "var", FAST)
        running.append(s)
        return s

    yield start
    for s in running:
        await s.stop()


async def _counts(rt: Any, entity_id: str) -> tuple[int, int, int]:
    async with rt.store.transaction() as tx:
        entities = await tx.fetchval("SELECT COUNT(*) FROM entities WHERE siren = $1", demo.DEMO_SIREN)
        instances = await tx.fetchval("SELECT COUNT(*) FROM connector_instances WHERE entity_id = $1", entity_id)
        docs = await tx.fetchval("SELECT COUNT(*) FROM documents WHERE entity_id = $1", entity_id)
    return int(entities), int(instances), int(docs)


def _pdf_reader(data: bytes) -> Any:
    from pyhanko.pdf_utils.reader import PdfFileReader
    return PdfFileReader(io.BytesIO(data))


async def test_every_shipped_flow_reaches_done_through_the_simulators(runtime_factory, sims, wait_state):
    rt = await runtime_factory("embedded")
    first = await sims()
    lines: list[str] = []
    started = time.monotonic()
    result = await demo.seed(rt, first, out=lines.append)
    assert set(result.documents) == SHIPPED and {d.flow_id for d in result.created} == SHIPPED
    assert sorted(result.instances) == ["ged", "mailsec", "parapheur", "parapheur-agent", "sae", "tdt-actes",
                                        "tdt-helios"]
    assert any("Entité de démonstration" in line for line in lines)

    done = {flow: await wait_state(rt, doc.id, "done", timeout=45) for flow, doc in result.documents.items()}
    elapsed = time.monotonic() - started
    assert elapsed < 45

    # délibération: sealed (PAdES, 3 pages, timestamp from the TSA simulator), AR from the S²LOW simulator
    delib = done["deliberation"]
    signed = await rt.blobs.read(delib.files_of("arrete")[0].blob_key)
    reader = _pdf_reader(signed)
    assert len(reader.embedded_signatures) == 1 and int(reader.root["/Pages"]["/Count"]) == 3
    assert first.tsa.requests >= 1
    assert delib.fields["signature_signer"].startswith("Cachet serveur")
    assert delib.fields["ar_identifier"].endswith("-DEMO_DEL_001-DE")
    ar = await rt.blobs.read(delib.files_of("aractes")[0].blob_key)
    assert parse_message(ar).event == "ar"
    assert first.s2low.transmissions("DEMO_DEL_001") == 1
    # then archived: a sealed SEDA package in the built-in archive store
    from flowbus.archive.store import ArchiveStore
    record = await ArchiveStore.for_runtime(rt).get(delib.fields["sae_package_id"])
    assert record.entity_id == delib.entity_id

    # PES: bordereau signed with XAdES by the seal, then PES_Acquit from Hélios (simulated)
    pes = done["pes"]
    pes_bytes = await rt.blobs.read(pes.files_of("pes_aller")[0].blob_key)
    assert all(b.signed for b in inspect_pes(pes_bytes).bordereaux)
    assert pes.fields["pes_acquit_ok"] is True
    assert parse_pes_acquit(await rt.blobs.read(pes.files_of("pes_acquit")[0].blob_key)).ok

    # contract: seal, then the agent's signature in the i-Parapheur simulator, then the secure mail
    contrat = done["rh-contrat"]
    assert contrat.fields["iparapheur_dossier"] in first.iparapheur.folders
    assert first.iparapheur.folders[contrat.fields["iparapheur_dossier"]].state == "FINISHED"
    assert contrat.files_of("bordereau_signature_agent")

    # secure mail really sent over SMTP, with a link to the recipient page of this server
    base = rt.settings.base_url.rstrip("/")
    for address in ("louis.durand@agents.demo.test", "camille.leroy@agents.demo.test",
                    "helene.bernard@famille.demo.test"):
        received = first.smtp.to(address)
        assert len(received) == 2, address  # the link, then the password in a separate message
        assert any(f"{base}/mail/" in r.text() for r in received)

    # cemetery: deposited in the filesystem GED
    folder = first.ged_dir / "cimetieres" / "Centre" / str(rt.clock.now().year) / "C-2026-017"
    assert (folder / "concession-C-2026-017.pdf").read_bytes().startswith(b"%PDF")
    assert (folder / "metadata.json").is_file()

    entity_id = result.entity_id
    assert await _counts(rt, entity_id) == (1, 7, 6)

    # a restart: new simulators on new ports, seeded again → nothing new, instances point at the new ports
    await first.stop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(first.s2low.url + "/api/test-connexion.php")
    second = await sims()
    again = await demo.seed(rt, second, out=lines.append)
    assert again.created == [] and again.entity_id == entity_id
    assert {f: d.id for f, d in again.documents.items()} == {f: d.id for f, d in result.documents.items()}
    assert await _counts(rt, entity_id) == (1, 7, 6)
    async with rt.store.transaction() as tx:
        inst = await rt.instances.resolve(tx, "tdt-actes", entity_id)
    assert inst.kind == "s2low" and inst.settings["url"] == second.s2low.url != first.s2low.url
    assert second.s2low.count("post_acte") == 0 and not second.smtp.received


async def test_guide_names_the_places_to_look(runtime_factory, sims):
    rt = await runtime_factory("embedded", workers=False)
    s = await sims()
    result = await demo.seed(rt, s, out=lambda line: None)
    text = "\n".join(demo.guide(rt, s, result))
    base = rt.settings.base_url.rstrip("/")
    for expected in (f"{base}/admin/", f"{base}/parapheur/", f"{s.iparapheur.url}/sim/", s.s2low.url,
                     f"127.0.0.1:{s.smtp.port}", str(s.ged_dir)):
        assert expected in text
    assert all(doc.id in text for doc in result.documents.values())
    # the printed demo administrator signs in with the printed password (a new one each run)
    assert f"« {demo.DEMO_LOGIN} », mot de passe « {result.password} »" in text
    from flowbus.people import accounts, passwords
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, demo.DEMO_LOGIN)
        assert passwords.verify(await accounts.password_hash(tx, user.id), result.password)
    again = await demo.seed(rt, s, out=lambda line: None)
    assert again.password != result.password


def test_generated_pes_passes_the_pre_send_checks_once_signed(tmp_path):
    from datetime import date

    from flowbus.connectors.tdt.helios import check_pes_aller, pes_errors
    from flowbus.signature.pki import make_test_pki
    from flowbus.signature.xades import sign_pes

    raw = demo.pes_aller("PES_DEMO_X.xml", date(2026, 11, 23))
    _, errors = pes_errors(raw)
    assert [e.field for e in errors] == ["InfoDematerialisee"]  # unsigned: S²LOW would refuse it
    index = check_pes_aller(sign_pes(raw, make_test_pki(tmp_path).seal))
    assert index.nom_fic == "PES_DEMO_X.xml" and index.id_coll == "21350238800017" and index.nb_bordereaux == 1

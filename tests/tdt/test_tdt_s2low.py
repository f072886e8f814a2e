"""The S²LOW client against the simulator over real HTTP (and TLS with a client certificate)."""

from __future__ import annotations

import base64
import ssl
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from flowbus.connectors.tdt.actes import Acte, ActeFile, untar_gz
from flowbus.connectors.tdt.actes_messages import parse_message
from flowbus.connectors.tdt.classification import parse_classification
from flowbus.connectors.tdt.helios import parse_pes_acquit, parse_pes_retour
from flowbus.connectors.tdt.s2low import S2lowClient, S2lowKO, ssl_context
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator
from flowbus.errors import PermanentError, TransientError
from flowbus.outbound import LOOPBACK, OutboundPolicy

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would


def _acte(pdf: bytes, numero: str = "DEL_2026_001", **kw) -> Acte:
    return Acte(kw.pop("nature_code", 1), kw.pop("matiere", (7, 1)), kw.pop("decision_date", date(2026, 1, 2)),
                numero, "Budget primitif 2026", ActeFile("deliberation.pdf", pdf, "99_DE"),
                (ActeFile("annexe.pdf", pdf, "99_SE"),), **kw)


async def test_act_status_progression_to_ar(sim, clock, pdf):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        assert await client.test_connexion()
        classification = parse_classification(await client.get_classification())
        assert classification.date == date(2019, 4, 18) and classification.has_matiere((7, 1))
        tid = await client.post_acte(_acte(pdf))
        seen = [(await client.get_acte_status(tid)).status]
        for step in (timedelta(minutes=2), timedelta(minutes=4), timedelta(hours=2)):
            clock.advance(step)
            seen.append((await client.get_acte_status(tid)).status)
        assert seen == [1, 2, 3, 4]
        status = await client.get_acte_status(tid)
        ar = parse_message(status.payload)
        assert ar.event == "ar" and ar.id_acte == "034-123456789-20260102-DEL_2026_001-DE"
        assert ar.date == date(2026, 1, 5)
        files = await client.list_files(tid)
        assert [f["name"] for f in files] == ["034-123456789-20260102-DEL_2026_001-DE-1-1_0.xml",
                                              "99_DE-034-123456789-20260102-DEL_2026_001-DE-1-1_1.pdf",
                                              "99_SE-034-123456789-20260102-DEL_2026_001-DE-1-1_2.pdf"]
        assert await client.download_file(files[1]["id"]) == pdf
        assert (await client.get_bordereau(tid)).startswith(b"%PDF")
        assert (await client.find_acte("DEL_2026_001"))["id"] == tid
        assert await client.find_acte("NOPE") is None
    assert sim.transmissions("DEL_2026_001") == 1


async def test_simulator_refuses_what_s2low_refuses(sim, pdf):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        await client.post_acte(_acte(pdf))
        with pytest.raises(S2lowKO, match="déjà utilisé"):
            await client.post_acte(_acte(pdf))
        with pytest.raises(S2lowKO, match="dans le futur"):
            await client.post_acte(_acte(pdf, "DEL_FUTUR", decision_date=date(2026, 2, 1)))
        with pytest.raises(S2lowKO, match="n'existe pas"):
            await client.post_acte(_acte(pdf, "DEL_CLASSIF", matiere=(7, 42)))
        bad = Acte(1, (7, 1), date(2026, 1, 2), "DEL_TYPO", "x", ActeFile("d.pdf", pdf, None))
        with pytest.raises(S2lowKO, match="typologie absente"):
            await client.post_acte(bad)
    assert sim.transmissions("DEL_2026_001") == 1 and sim.count("post_acte", "DEL_2026_001") == 2


async def test_anomaly_and_refusal_carry_the_reason(sim, clock, pdf):
    sim.script_acte("DEL_ANO", "anomaly")
    sim.script_acte("DEL_REF", "refused", "Acte non transmissible : signature absente")
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        ano = await client.post_acte(_acte(pdf, "DEL_ANO"))
        ref = await client.post_acte(_acte(pdf, "DEL_REF"))
        clock.advance(hours=3)
        st = await client.get_acte_status(ano)
        assert st.status == -1 and "002" in st.message and "classification" in st.message
        anomaly = parse_message(sim.transactions[int(ano)].files["anomalie"])
        assert anomaly.event == "anomaly" and anomaly.anomaly_nature == "002"
        st = await client.get_acte_status(ref)
        assert (st.status, st.message) == (6, "Acte non transmissible : signature absente")


async def test_http_errors_are_typed(sim, pdf):
    sim.fail = {"post_acte": [500, 502], "get_status": 404}
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        for _ in range(2):
            with pytest.raises(TransientError, match="HTTP 50"):
                await client.post_acte(_acte(pdf))
        tid = await client.post_acte(_acte(pdf))  # the TdT is back
        with pytest.raises(PermanentError, match="404") as err:
            await client.get_acte_status(tid)
        assert err.value.field == "url"
        sim.down = True
        with pytest.raises(TransientError, match="503"):
            await client.test_connexion()
    assert sim.failures["post_acte"] == 2 and sim.transmissions("DEL_2026_001") == 1
    await sim.stop()
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        with pytest.raises(TransientError, match="injoignable"):
            await client.test_connexion()


async def test_basic_auth(clock, pdf):
    async with S2lowSimulator(clock=clock, login="mairie", password="sécret") as sim:
        async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY, login="mairie", password="sécret") as client:
            assert await client.test_connexion()
        async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY, login="mairie", password="faux") as client:
            with pytest.raises(PermanentError, match="authentification") as err:
                await client.test_connexion()
            assert err.value.field == "login"


async def test_cancellation(sim, clock, pdf):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        tid = await client.post_acte(_acte(pdf))
        with pytest.raises(S2lowKO, match="pas acquitté"):
            await client.cancel_acte(tid)
        clock.advance(hours=3)
        cancel_id = await client.cancel_acte(tid)
        with pytest.raises(S2lowKO, match="déjà en cours"):
            await client.cancel_acte(tid)
        assert (await client.get_acte_status(tid)).status == 4
        clock.advance(hours=3)
        assert (await client.get_acte_status(tid)).status == 0
        ar = parse_message((await client.get_acte_status(cancel_id)).payload)
        assert ar.event == "cancelled" and ar.id_acte == "034-123456789-20260102-DEL_2026_001-DE"


async def test_prefecture_letters_and_answers(sim, clock, pdf):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        tid = await client.post_acte(_acte(pdf))
        clock.advance(hours=3)
        lid = str(sim.send_letter(tid, "DemandePieceComplementaire", text="Merci de joindre le PV de séance"))
        cid = str(sim.send_letter(tid, "CourrierSimple", text="Pour information"))
        rows = await client.list_prefecture_documents()
        assert [(r["id"], r["type"], r["related_transaction_id"]) for r in rows] == [(lid, "3", tid), (cid, "2", tid)]
        assert await client.related_documents(tid) == [(3, 7, lid), (2, 21, cid)]
        files = untar_gz(await client.get_prefecture_document(lid))
        assert any(n.startswith("EACT--") for n in files)
        msg = next(parse_message(c) for n, c in files.items() if n.endswith("-3-1_0.xml"))
        assert (msg.event, msg.text) == ("demande_pieces", "Merci de joindre le PV de séance")
        await client.mark_prefecture_document_read(lid)
        assert [r["id"] for r in await client.list_prefecture_documents()] == [cid]
        rid = await client.reply_prefecture(lid, 4, ActeFile("pv.pdf", pdf, "99_DE"), (ActeFile("a.pdf", pdf, "99_DE"),))
        reponse = parse_message(sim.transactions[int(rid)].files["reponse"])
        assert reponse.root == "PieceComplementaire" and reponse.files == ("pv.pdf", "a.pdf")
        clock.advance(hours=3)
        st = await client.get_acte_status(rid)
        assert st.status == 11 and parse_message(st.payload).root == "ARPieceComplementaire"
        with pytest.raises(S2lowKO):
            await client.reply_prefecture(tid, 4, ActeFile("x.pdf", pdf, "99_DE"))
    assert sim.count("reply") == 2


async def test_pes_post_status_acquit_and_retour(sim, clock, make_pes, shared: Path):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        data = make_pes("PES_2026_0001")
        pid = await client.post_pes(data, "pes.xml")
        assert (await client.get_pes_status(pid)).status == 1
        with pytest.raises(TransientError, match="pas encore"):
            await client.get_pes_acquit(pid)
        clock.advance(minutes=6)
        assert (await client.get_pes_status(pid)).status == 3
        clock.advance(hours=1)
        st = await client.get_pes_status(pid)
        assert (st.status, st.label) == (4, "Acquitté")
        acquit = parse_pes_acquit(await client.get_pes_acquit(pid))
        assert acquit.ok and acquit.nom_fic == "PES_2026_0001"
        with pytest.raises(S2lowKO, match="Doublon"):
            await client.post_pes(data, "pes.xml")
        bad = await client.post_pes(make_pes("PES_BAD").replace(b'<CodCol V="123"/>', b'<CodCol V="000"/>'), "b.xml")
        clock.advance(minutes=2)
        st = await client.get_pes_status(bad)
        assert st.status == -1 and "CodCol" in st.message
        retour = (shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes()
        rid = str(sim.add_pes_retour("HELIOS_SIMU_RETOUR.xml", retour))
        assert [r["id"] for r in await client.list_pes_retour()] == [rid]
        assert parse_pes_retour(await client.get_pes_retour(rid)).typ_fic == "PESRETOUR_DEP"
        await client.mark_pes_retour_read(rid)
        assert await client.list_pes_retour() == []
        with pytest.raises(S2lowKO):
            await client.get_pes_retour("999")
    assert sim.count("post_pes", "PES_2026_0001") == 2 and len(sim.pes) == 2


# ---- TLS with a client certificate -------------------------------------------------------------


def _pki(tmp: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = datetime.now(UTC)

    def cert(name, key, issuer_name, issuer_key, *, ca=False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            import ipaddress
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]), False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = cert("Test CA", ca_key, ca_name, ca_key, ca=True)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    srv = cert("127.0.0.1", srv_key, ca_name, ca_key, san="127.0.0.1", usage=ExtendedKeyUsageOID.SERVER_AUTH)
    cli = cert("Mairie de Test", cli_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "srv.pem").write_bytes(srv.public_bytes(pem) + srv_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    p12 = pkcs12.serialize_key_and_certificates(b"mairie", cli_key, cli, None,
                                                serialization.BestAvailableEncryption(b"p12pass"))
    return tmp / "ca.pem", tmp / "srv.pem", p12


async def test_tls_client_certificate_from_pkcs12(tmp_path: Path, clock):
    ca, srv, p12 = _pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    server_ctx.load_cert_chain(srv)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # S²LOW: SSL_CLIENT_VERIFY is mandatory
    async with S2lowSimulator(clock=clock, ssl_context=server_ctx) as sim:
        assert sim.url.startswith("https://")
        settings = {"url": sim.url, "client_cert_p12_base64": base64.b64encode(p12).decode(),
                    "client_cert_password": "p12pass", "ca_path": str(ca)}
        async with S2lowClient.from_settings(settings, outbound=LOOPBACK_POLICY) as client:
            assert await client.test_connexion()
        async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY, ssl_ctx=ssl.create_default_context(cafile=str(ca))) as client:
            with pytest.raises(TransientError):  # no client certificate: the handshake is refused
                await client.test_connexion()
    with pytest.raises(PermanentError) as err:
        ssl_context({**settings, "client_cert_password": "faux"})
    assert err.value.field == "client_cert_password"


async def test_every_simulator_message_is_checked_against_the_xsd(sim, clock, pdf, check_actes_messages):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        tid = await client.post_acte(_acte(pdf))
        clock.advance(hours=3)
        await client.cancel_acte(tid)
        sim.send_letter(tid, "LettreObservations", text="Motif")
    # enveloppe + act message, annulation + its AR, the AR of the act, letter + its enveloppe (twice: file and archive)
    assert check_actes_messages(sim) >= 7
    t = sim.transactions[int(tid)]
    t.files["broken"] = t.files.get("anomalie", b"") or b"<?xml version='1.0'?><actes:Acte " \
        b"xmlns:actes='http://www.interieur.gouv.fr/ACTES#v1.1-20040216'/>"
    with pytest.raises(AssertionError, match="not valid ACTES"):
        check_actes_messages(sim)
    del t.files["broken"]


async def test_configuration_errors_name_the_setting(sim):
    import structlog
    from flowbus.connectors.tdt.classification import parse_ttl
    with pytest.raises(PermanentError) as err:
        S2lowClient("")
    assert err.value.field == "url"
    with pytest.raises(PermanentError) as err:
        parse_ttl("demain")
    assert err.value.field == "classification_ttl"
    assert parse_ttl("90m") == timedelta(minutes=90) and parse_ttl(3600) == timedelta(hours=1)
    with pytest.raises(PermanentError) as err:
        ssl_context({"url": "https://x", "client_cert_path": "/nonexistent/client.pem"})
    assert err.value.field == "client_cert_path"
    with structlog.testing.capture_logs() as logs:
        async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY, login="mairie", password="s3cr3t-pw") as client:
            await client.test_connexion()
    assert [e["path"] for e in logs if e["event"] == "s2low.request"] == ["/api/test-connexion.php"]
    assert "s3cr3t-pw" not in repr(logs)

"""S²LOW as it authenticates (tdt.md §3.1): the simulator over TLS with client certificates, accounts found by
certificate, Basic among several, the nonce login, RGS** (en_attente, confirmation, forwarded certificate) and
the probe endpoints — always through the real client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from flowbus.connectors.checks import _s2low
from flowbus.connectors.tdt.actes import Acte, ActeFile
from flowbus.connectors.tdt.s2low import S2lowClient, S2lowKO, _load_p12
from flowbus.connectors.tdt.s2low_sim import Account, S2lowSimulator, tls_context
from flowbus.errors import PermanentError
from flowbus.outbound import LOOPBACK, OutboundPolicy, client_session

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)


@dataclass
class Pki:
    ca: Path
    server: Path
    mairie_p12: bytes  # the collectivité's certificate (PKCS#12, password "p12pass")
    mairie_der: bytes
    agent_p12: bytes  # an agent's RGS** certificate
    agent_der: bytes
    agent_pem: str
    stranger_p12: bytes  # issued by the CA, known to no account


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress
    tmp = tmp_path_factory.mktemp("pki")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AC de test S2LOW")])

    def issue(cn: str, key, *, ca: bool = False, server: bool = False):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                False).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        elif not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        return b.sign(ca_key, hashes.SHA256())

    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    ca = issue("AC de test S2LOW", ca_key, ca=True)
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = issue("127.0.0.1", srv_key, server=True)
    (tmp / "server.pem").write_bytes(srv.public_bytes(pem) + srv_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def client(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(cn, key)
        p12 = pkcs12.serialize_key_and_certificates(cn.encode(), key, cert, None,
                                                    serialization.BestAvailableEncryption(b"p12pass"))
        return p12, cert

    mairie, mairie_cert = client("Mairie de Test")
    agent, agent_cert = client("Agent RGS2 Test")
    stranger, _ = client("Inconnu")
    return Pki(tmp / "ca.pem", tmp / "server.pem", mairie, mairie_cert.public_bytes(der), agent,
               agent_cert.public_bytes(der), agent_cert.public_bytes(pem).decode(), stranger)


def _settings(pki: Pki, url: str, p12: bytes | None = None, **extra) -> dict:
    s = {"url": url, "ca_path": str(pki.ca), **extra}
    if p12 is not None:
        s.update(client_cert_p12_base64=base64.b64encode(p12).decode(), client_cert_password="p12pass")
    return s


def _ssl_with(pki: Pki, p12: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    _load_p12(ctx, p12, "p12pass")
    return ctx


async def _check(settings: dict):
    async with client_session(LOOPBACK_POLICY) as http:
        return await _s2low(settings, http)


def _client(settings: dict) -> S2lowClient:
    return S2lowClient.from_settings(settings, outbound=LOOPBACK_POLICY)


def _acte(pdf: bytes, numero: str) -> Acte:
    return Acte(1, (7, 1), date(2026, 1, 2), numero, "Budget primitif 2026", ActeFile("deliberation.pdf", pdf, "99_DE"))


def _tls_sim(pki: Pki, clock, *, accounts: list[Account], require: bool = True, **kw) -> S2lowSimulator:
    kw.setdefault("delays", {"validate": timedelta(minutes=1), "transmit": timedelta(minutes=5),
                             "ar": timedelta(hours=2)})
    return S2lowSimulator(clock=clock, ssl_context=tls_context(str(pki.server), str(pki.ca),
                                                               require_client_cert=require), accounts=accounts, **kw)


# ---- 1. TLS and the client certificate ---------------------------------------------------------------


async def test_tls_account_found_by_certificate_and_no_certificate_refused(pki, clock):
    accounts = [Account("mairie", "pw", certificate=pki.mairie_der, name="Secrétariat", email="mairie@test.fr")]
    async with _tls_sim(pki, clock, accounts=accounts) as sim:
        assert sim.url.startswith("https://")
        async with _client(_settings(pki, sim.url, pki.mairie_p12)) as client:
            assert await client.test_connexion()  # no login: the certificate alone names the account
            info = await client.info_connexion()
            assert (info.login, info.user_name, info.authority_name) == ("mairie", "Secrétariat", "Commune de Test")
            assert await client.list_logins() == ["mairie"]
        # no certificate: the handshake is refused, and the client says why, in French, naming the setting
        async with _client(_settings(pki, sim.url)) as client:
            with pytest.raises(PermanentError, match="aucun certificat client") as err:
                await client.test_connexion()
            assert err.value.field == "client_cert_p12_base64"
        # a certificate of the right CA that no account uses: S²LOW's own answer
        async with _client(_settings(pki, sim.url, pki.stranger_p12)) as client:
            with pytest.raises(PermanentError, match="Certificat client inconnu"):
                await client.test_connexion()
        # the connector check (« Tester ») says it too
        result = await _check(_settings(pki, sim.url))
        assert result.ok is False and "aucun certificat client" in result.message
        result = await _check(_settings(pki, sim.url, pki.mairie_p12))
        assert result.ok is True and "« mairie » (Secrétariat) pour « Commune de Test »" in result.message
        assert "n'est pas RGS**" in result.message and "test-rgs : KO" in result.detail
    # a handshake that succeeds without a certificate: S²LOW answers it has none
    async with _tls_sim(pki, clock, accounts=accounts, require=False) as sim:
        async with _client(_settings(pki, sim.url)) as client:
            with pytest.raises(PermanentError, match="Aucun certificat client") as err:
                await client.test_connexion()
            assert err.value.field == "client_cert_p12_base64"
    # the server's certificate not trusted: named as such
    async with _tls_sim(pki, clock, accounts=accounts) as sim:
        async with _client({**_settings(pki, sim.url, pki.mairie_p12), "ca_path": ""}) as client:
            with pytest.raises(PermanentError, match="certificat du serveur S²LOW n'est pas reconnu") as err:
                await client.test_connexion()
            assert err.value.field == "ca_path"


async def test_basic_chooses_among_accounts_sharing_a_certificate(pki, clock):
    accounts = [Account("mairie", "pw-m", certificate=pki.mairie_der),
                Account("ccas", "pw-c", certificate=pki.mairie_der, name="CCAS")]
    async with _tls_sim(pki, clock, accounts=accounts) as sim:
        async with _client(_settings(pki, sim.url, pki.mairie_p12)) as client:
            assert await client.list_logins() == ["mairie", "ccas"]  # api-list-login: the certificate alone
            with pytest.raises(PermanentError, match="Plusieurs comptes") as err:
                await client.test_connexion()
            assert err.value.field == "login"
        async with _client(_settings(pki, sim.url, pki.mairie_p12, login="ccas", password="pw-c")) as client:
            assert (await client.info_connexion()).user_name == "CCAS"
        async with _client(_settings(pki, sim.url, pki.mairie_p12, login="ccas", password="pw-m")) as client:
            with pytest.raises(PermanentError, match="mot de passe incorrect"):
                await client.test_connexion()


# ---- 2. nonce login ---------------------------------------------------------------------------------


async def test_nonce_login_and_replayed_nonce_refused(pki, clock, pdf):
    accounts = [Account("mairie", "pw-m", certificate=pki.mairie_der),
                Account("ccas", "sécret", certificate=pki.mairie_der, name="CCAS")]
    async with _tls_sim(pki, clock, accounts=accounts) as sim:
        settings = _settings(pki, sim.url, pki.mairie_p12, login="ccas", password="sécret", auth_method="nounce")
        async with _client(settings) as client:
            assert await client.test_connexion()
            assert (await client.info_connexion()).user_name == "CCAS"
            tid = await client.post_acte(_acte(pdf, "NONCE_001"))
        assert sim.transactions[int(tid)].number == "NONCE_001" and not sim.nonces  # each nonce was used once
        assert sim.count("get_nounce") == 3 and sim.auth_used[("nounce", "ccas")] == 3
        assert sim.auth_used[("basic", "ccas")] == 3  # the password travels only to ask for a nonce
        ctx = _ssl_with(pki, pki.mairie_p12)
        basic = {"Authorization": "Basic " + base64.b64encode("ccas:sécret".encode("iso-8859-1")).decode()}
        async with client_session(LOOPBACK_POLICY) as http:
            async def nonce() -> str:
                async with http.get(sim.url + "/api/get-nounce.php", ssl=ctx,
                                    headers=basic) as resp:
                    return (await resp.json())["nounce"]

            async def call(n: str, password: str = "sécret") -> tuple[int, str]:
                digest = hashlib.sha256(f"{password}:{n}".encode("iso-8859-1")).hexdigest()
                async with http.get(sim.url + "/api/test-connexion.php", ssl=ctx,
                                    params={"nounce": n, "login": "ccas", "hash": digest}) as resp:
                    return resp.status, (await resp.read()).decode("iso-8859-1")
            n = await nonce()
            assert await call(n) == (200, "OK\n")
            status, text = await call(n)  # replayed
            assert status == 401 and "déjà utilisé" in text
            assert (await call(await nonce(), "faux"))[0] == 401  # a wrong password gives a wrong hash
            n = await nonce()
            clock.advance(minutes=6)
            assert (await call(n))[0] == 401  # expired
            async with http.get(sim.url + "/api/get-nounce.php", ssl=ctx) as resp:  # no login: S²LOW's 401
                assert resp.status == 401 and "mot de passe" in await resp.text()
    with pytest.raises(PermanentError) as err:
        S2lowClient("https://x", auth_method="nounce")
    assert err.value.field == "login"


# ---- 3. RGS** -------------------------------------------------------------------------------------------


async def test_rgs_en_attente_then_agent_confirms(pki, clock, pdf):
    accounts = [Account("mairie", "pw", certificate=pki.mairie_der), Account("agent", "pa", certificate=pki.agent_der)]
    async with _tls_sim(pki, clock, accounts=accounts, require_rgs=True, rgs_certificates={pki.agent_der}) as sim:
        async with _client(_settings(pki, sim.url, pki.mairie_p12)) as client:
            assert not await client.test_rgs()
            with pytest.raises(S2lowKO, match="RGS"):
                await client.post_acte(_acte(pdf, "RGS_001"))  # direct transmission needs RGS**
            tid = await client.post_acte(_acte(pdf, "RGS_001"), en_attente=True)
            assert (await client.get_acte_status(tid)).status == 17
            with pytest.raises(S2lowKO, match="certificat RGS"):
                await client.post_confirm(tid)  # the collectivité's certificate is not RGS**
            url = client.confirm_url(tid, "https://flowbus.test/admin/documents/d1?tdt=%%ERROR%%&msg=%%MESSAGE%%")
            assert await client.number_actes(17) == 1
        assert urlsplit(url).path == "/modules/actes/actes_transac_post_confirm_api.php"
        # the agent's browser visits the link with his RGS** certificate: 17 → 1, back to the document
        ctx = _ssl_with(pki, pki.agent_p12)
        async with client_session(LOOPBACK_POLICY) as http:
            async with http.get(url, ssl=ctx, allow_redirects=False) as resp:
                assert resp.status == 302
                back = resp.headers["Location"]
        assert back.startswith("https://flowbus.test/admin/documents/d1?") and parse_qs(urlsplit(back).query)["tdt"] \
            == ["0"]
        assert sim.transactions[int(tid)].confirmed_by == "agent"
        async with client_session(LOOPBACK_POLICY) as http:  # confirmed once only
            async with http.get(url, ssl=ctx, allow_redirects=False) as resp:
                again = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert again["tdt"] == ["1"] and "En attente" in again["msg"][0]
        async with _client(_settings(pki, sim.url, pki.mairie_p12)) as client:
            assert (await client.get_acte_status(tid)).status == 1
            clock.advance(minutes=1)
            assert (await client.get_acte_status(tid)).status in (2, 3, 4)
        # the forwarded-certificate header makes the collectivité's connection RGS**: direct transmission
        forward = _settings(pki, sim.url, pki.mairie_p12, forward_x509_certificate=pki.agent_pem)
        async with _client(forward) as client:
            assert await client.test_rgs()
            tid2 = await client.post_acte(_acte(pdf, "RGS_002"))
            assert (await client.get_acte_status(tid2)).status in (1, 2, 3, 4)
        result = await _check(forward)
        assert result.ok and "la connexion est RGS**" in result.message and "test-rgs : OK" in result.detail
    with pytest.raises(PermanentError) as err:
        _client({"url": "https://x", "forward_x509_certificate": "pas un certificat"})
    assert err.value.field == "forward_x509_certificate"


# ---- 4. the other endpoints of tdt.md §3 ---------------------------------------------------------------


async def test_status_list_counts_and_old_tampon(sim, clock, pdf):
    async with S2lowClient(sim.url, outbound=LOOPBACK_POLICY) as client:
        statuses = await client.actes_statuses()
        assert statuses[4] == "Acquittement reçu" and statuses[17] == "En attente d'être postée" and len(statuses) >= 22
        tid = await client.post_acte(_acte(pdf, "TAMPON_001"))
        await client.post_acte(_acte(pdf, "TAMPON_002"))
        assert await client.number_actes(1) == 2 and await client.number_actes(4) == 0
        with pytest.raises(S2lowKO, match="tamponné indisponible"):
            await client.get_tampon(tid)  # not acknowledged yet
        clock.advance(hours=3)
        assert await client.number_actes(4) == 2 and await client.number_actes(1) == 0
        stamped = await client.get_tampon(tid)
        assert stamped.startswith(b"%PDF") and sim.transactions[int(tid)].archive.id_acte.encode() in stamped
        assert await client.test_rgs() is False  # plain HTTP, no certificate: not RGS**
        assert await client.list_logins() == []


def test_simulator_program_serves_tls_and_requires_a_client_certificate(pki):
    """``flowbus tdt s2low-sim --tls-cert … --tls-client-ca …``: HTTPS, the handshake needs a client certificate."""
    import json
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flowbus", "s2low-sim", "--port", str(port),
                             "--tls-cert", str(pki.server), "--tls-client-ca", str(pki.ca)],
                            stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"https://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{info['url']}/api/test-connexion.php", timeout=5,
                                    context=_ssl_with(pki, pki.mairie_p12)) as r:
            assert r.read() == b"OK\n"
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            urllib.request.urlopen(f"{info['url']}/api/test-connexion.php", timeout=5,
                                   context=ssl.create_default_context(cafile=str(pki.ca))).read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- 3. RGS** through the engine and the document page --------------------------------------------------


async def test_rgs_transmission_waits_for_the_agent_on_the_document_page(backend, pki, runtime_factory,
                                                                         server_factory, people, wait_state, pdf,
                                                                         tmp_path, check_actes_messages):
    import re
    import shutil
    import textwrap
    from html import unescape

    from flowbus import documents
    from flowbus.api.entities import create_entity
    from flowbus.connectors.tdt.steps import RGS_WAITING
    from flowbus.people.access import Grant
    from tests.tdt.test_tdt_e2e import DELIBERATION, ROOT, _deliberation
    from tests.web.test_document_pes import _signed_in

    accounts = [Account("mairie", "pw", certificate=pki.mairie_der), Account("agent", "pa", certificate=pki.agent_der)]
    sim = _tls_sim(pki, None, accounts=accounts, require_rgs=True, rgs_certificates={pki.agent_der},
                   delays={"transmit": timedelta(milliseconds=200), "ar": timedelta(milliseconds=600)})
    await sim.start()
    try:
        cfg = tmp_path / "config"
        (cfg / "flows").mkdir(parents=True)
        (cfg / "connectors").mkdir()
        (cfg / "flows" / "deliberation.yml").write_text(textwrap.dedent(DELIBERATION))
        shutil.copy(ROOT / "config" / "flows" / "demo.yml", cfg / "flows" / "demo.yml")
        (cfg / "connectors" / "demo.yml").write_text(
            "instances:\n  - {id: demo-notify, family: notify, kind: test, entity: null, settings: {}}\n")
        p12 = base64.b64encode(pki.mairie_p12).decode()
        (cfg / "connectors" / "tdt.yml").write_text(textwrap.dedent(f"""
            instances:
              - id: s2low-actes
                family: tdt-actes
                kind: s2low
                entity: null
                settings: {{url: "{sim.url}", ca_path: "{pki.ca}", client_cert_p12_base64: "{p12}",
                            client_cert_password: p12pass, envoi_en_attente: true, departement: "034",
                            siren: "123456789", classification_ttl: 1d}}
            """))
        rt = await runtime_factory(backend, config_dir=cfg)
        ent = await create_entity(rt, name="Commune de Test", siren=None, parent=None, actor_name="test")
        doc = await _deliberation(rt, ent.id, "RGS_E2E_001", pdf)
        waiting = await wait_state(rt, doc.id, "waiting", timeout=30)
        assert waiting.fields["tdt_status"] == RGS_WAITING
        tid = int(waiting.fields["tdt_transaction_id"])
        await asyncio.sleep(1.2)  # polls go by: S²LOW keeps it at 17 until an agent confirms
        assert sim.transactions[tid].status_at(sim.clock.now())[0] == 17
        assert (await documents.get_document(rt, doc.id)).state == "waiting"

        srv = await server_factory(rt)
        await people.user(rt, "secretaire", grants=(Grant(ent.id, "admin"),))
        http = await _signed_in(srv.url, "secretaire", people.password)
        try:
            async with http.get(f"/admin/documents/{doc.id}") as resp:
                html = await resp.text()
            assert "Confirmation RGS** attendue" in html
            link = unescape(re.search(r'id="confirmer-rgs" href="([^"]+)"', html).group(1))
            assert link == waiting.fields["tdt_confirm_url"]
            assert link.startswith(f"{sim.url}/modules/actes/actes_transac_post_confirm_api.php?id={tid}&")
            # the agent's browser, with his RGS** certificate: S²LOW confirms and sends him back to the document
            async with client_session(LOOPBACK_POLICY) as browser:
                async with browser.get(link, ssl=_ssl_with(pki, pki.agent_p12), allow_redirects=False) as resp:
                    assert resp.status == 302
                    back = resp.headers["Location"]
            assert back.startswith(f"{srv.url}/admin/documents/{doc.id}?confirmation_tdt=0")
            async with http.get(back.removeprefix(srv.url)) as resp:
                assert "S²LOW a enregistré la confirmation" in await resp.text()
            done = await wait_state(rt, doc.id, "done", timeout=30)
            assert done.fields["ar_identifier"] == "034-123456789-20260102-RGS_E2E_001-DE"
            assert not done.fields.get("tdt_confirm_url") and sim.transactions[tid].confirmed_by == "agent"
            assert {f.field for f in done.files} >= {"aractes", "acte_tamponne"}
            async with http.get(f"/admin/documents/{doc.id}") as resp:
                assert "confirmer-rgs" not in await resp.text()
            # S²LOW's refusal comes back to the page in French
            async with http.get(f"/admin/documents/{doc.id}?confirmation_tdt=1&message_tdt=Certificat+non+RGS") as r:
                assert "S²LOW n'a pas confirmé la télétransmission : Certificat non RGS" in await r.text()
        finally:
            await http.close()
        assert sim.transmissions("RGS_E2E_001") == 1
    finally:
        await sim.stop()
    check_actes_messages(sim)


async def test_tester_lists_the_accounts_of_a_shared_certificate_and_waiting_acts(pki, clock, pdf):
    accounts = [Account("mairie", "pw-m", certificate=pki.mairie_der),
                Account("ccas", "pw-c", certificate=pki.mairie_der)]
    async with _tls_sim(pki, clock, accounts=accounts) as sim:
        result = await _check(_settings(pki, sim.url, pki.mairie_p12))
        assert result.ok is False
        assert result.message.startswith("Plusieurs comptes S²LOW utilisent ce certificat (mairie, ccas)")
        settings = _settings(pki, sim.url, pki.mairie_p12, login="ccas", password="pw-c", envoi_en_attente=True)
        async with _client(settings) as client:
            await client.post_acte(_acte(pdf, "ATT_001"), en_attente=True)
            await client.post_acte(_acte(pdf, "ATT_002"), en_attente=True)
        result = await _check(settings)
        assert result.ok and "déposés en attente" in result.message
        assert "2 acte(s) attendent sur S²LOW la confirmation d'un agent" in result.message


async def test_old_s2low_stamped_act_and_a_status_named_by_s2low(fake_runtime, clock, pdf):
    """S²LOW < 2 has no files list: the stamped act comes from actes_transac_get_tampon.php. A status flowbus does
    not know is named with S²LOW's own list (actes_status.php)."""
    from tests.tdt.test_tdt_steps import _apply, _ctx, _deliberation, _document, _instance
    from flowbus.connectors.tdt.steps import TdtActesConnector
    async with S2lowSimulator(clock=clock, fail={"files_list": 404},
                              delays={"transmit": timedelta(minutes=5), "ar": timedelta(hours=2)}) as sim:
        conn = TdtActesConnector(_instance(sim), fake_runtime)
        doc = await _document(fake_runtime, *_deliberation(pdf))
        out = await conn.start(_ctx(fake_runtime, conn.instance, doc))
        clock.advance(hours=3)
        done = await conn.check(_ctx(fake_runtime, conn.instance, _apply(doc, out), out.data))
        assert done.status == "done"
        stamped = [f for f in done.files if f.field == "acte_tamponne"]
        assert len(stamped) == 1 and stamped[0].filename == "tampon-034-123456789-20260102-DEL_2026_001-DE.pdf"
        assert b"034-123456789-20260102-DEL_2026_001-DE" in await fake_runtime.blobs.read(stamped[0].blob.key)
        assert sim.count("get_tampon") == 1 and sim.failures["files_list"] == 1
        # a status this version does not know (S²LOW 23, say): its name comes from S²LOW
        t = sim.transactions[int(out.data["transaction_id"])]
        t.timeline.append((clock.now(), 23, b""))
        sim.status_labels[23] = "En attente de mise en signature"
        with pytest.raises(PermanentError, match=r"inattendu .* 23 \(En attente de mise en signature\)"):
            await conn.check(_ctx(fake_runtime, conn.instance, _apply(doc, out), out.data))


async def test_document_step_without_certificate_fails_with_the_reason(pki, clock, fake_runtime, pdf):
    """The step of a document says, in French, that the connector has no client certificate (no retry)."""
    from tests.tdt.test_tdt_steps import _ctx, _deliberation, _document
    from flowbus.connectors.base import ConnectorInstance
    from flowbus.connectors.tdt.steps import TdtActesConnector
    async with _tls_sim(pki, clock, accounts=[Account("mairie", "pw", certificate=pki.mairie_der)]) as sim:
        def instance(**settings) -> ConnectorInstance:
            return ConnectorInstance(id="tdt-actes-s2low", family="tdt-actes", kind="s2low", entity_id=None,
                                     settings={**_settings(pki, sim.url), "departement": "034", "siren": "123456789",
                                               **settings}, secret_keys=TdtActesConnector.secret_keys)
        doc = await _document(fake_runtime, *_deliberation(pdf))
        conn = TdtActesConnector(instance(), fake_runtime)
        with pytest.raises(PermanentError, match="aucun certificat client n'est configuré") as err:
            await conn.start(_ctx(fake_runtime, conn.instance, doc))
        assert err.value.field == "client_cert_p12_base64" and "certificat client (PKCS#12)" in err.value.hint
        p12 = {"client_cert_p12_base64": base64.b64encode(pki.mairie_p12).decode(), "client_cert_password": "p12pass"}
        conn = TdtActesConnector(instance(**p12), fake_runtime)
        out = await conn.start(_ctx(fake_runtime, conn.instance, doc))
        assert out.status == "waiting" and sim.auth_used[("certificate", "mairie")] >= 2

"""« Tester » for every real connector kind, against the project's simulators and real local servers: green with
good settings, red in French with a wrong password or an unreachable address; test connectors claim nothing."""

from __future__ import annotations

import base64
import socket
from types import SimpleNamespace

import pytest

from flowbus.archive.asalae_sim import AsalaeSimulator
from flowbus.blobs.memory import MemoryBlobStore
from flowbus.connectors.base import ConnectorInstance
from flowbus.connectors.checks import test_instance as check_instance
from flowbus.outbound import LOOPBACK, OutboundPolicy, client_session
from flowbus.signature.iparapheur_sim import IParapheurSimulator
from flowbus.signature.pki import make_test_pki

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def rt(tmp_path):
    async with client_session(LOOPBACK_POLICY) as http:
        yield SimpleNamespace(http=http, blobs=MemoryBlobStore(), outbound=LOOPBACK_POLICY)


def inst(family, kind, **settings):
    return ConnectorInstance("x", family, kind, None, settings)


async def test_iparapheur(rt):
    async with IParapheurSimulator() as sim:
        good = dict(url=sim.url, username="flowbus", password="flowbus-secret", tenant_id="t-collectivite",
                    desk_id="d-secretariat")
        r = await check_instance(rt, inst("signature", "iparapheur", **good))
        assert r.ok and "i-Parapheur accepte la connexion" in r.message
        r = await check_instance(rt, inst("signature", "iparapheur", **{**good, "password": "faux"}))
        assert r.ok is False and "Authentification refusée par i-Parapheur" in r.message
        r = await check_instance(rt, inst("signature", "iparapheur", **{**good, "desk_id": "d-inconnu"}))
        assert r.ok is False and "n'est pas parmi les vôtres" in r.message


async def test_asalae(rt):
    sim = AsalaeSimulator(login="flowbus", password="bon")
    url = await sim.start()
    try:
        r = await check_instance(rt, inst("sae", "asalae", url=url, login="flowbus", password="bon"))
        assert r.ok, r
        r = await check_instance(rt, inst("sae", "asalae", url=url, login="flowbus", password="faux"))
        assert r.ok is False and "Authentification refusée par As@lae" in r.message
    finally:
        await sim.stop()
    r = await check_instance(rt, inst("sae", "asalae", url=f"http://127.0.0.1:{_free_port()}", login="a",
                                      password="b"))
    assert r.ok is False and "As@lae injoignable" in r.message


async def test_webdav(rt):
    from tests.connectors.test_ged import WebdavServer
    server = WebdavServer("ged", "s3cret")
    url = await server.start()
    try:
        r = await check_instance(rt, inst("ged", "webdav", url=url, username="ged", password="s3cret"))
        assert r.ok and "Le dossier WebDAV est accessible." == r.message
        r = await check_instance(rt, inst("ged", "webdav", url=url, username="ged", password="faux"))
        assert r.ok is False and "Authentification refusée par le serveur WebDAV (HTTP 401)" in r.message
    finally:
        await server.stop()
    r = await check_instance(rt, inst("ged", "webdav", url=f"http://127.0.0.1:{_free_port()}/dav"))
    assert r.ok is False and "injoignable" in r.message


async def test_s3(rt, s3_server):
    from minio import Minio
    Minio(s3_server, access_key="test", secret_key="test", secure=False).make_bucket("ged-commune")
    good = dict(endpoint=s3_server, access_key="test", secret_key="test", bucket="ged-commune")
    r = await check_instance(rt, inst("ged", "s3", **good))
    assert r.ok and "« ged-commune » est accessible" in r.message
    r = await check_instance(rt, inst("ged", "s3", **{**good, "bucket": "absent"}))
    assert r.ok is False and "n'existe pas" in r.message
    r = await check_instance(rt, inst("ged", "s3", **{**good, "endpoint": f"127.0.0.1:{_free_port()}"}))
    assert r.ok is False and "injoignable" in r.message


async def test_filesystem_and_seal(rt, tmp_path):
    r = await check_instance(rt, inst("ged", "filesystem", directory=str(tmp_path)))
    assert r.ok
    r = await check_instance(rt, inst("ged", "filesystem", directory=str(tmp_path / "absent")))
    assert r.ok is False and "n'existe pas" in r.message
    pki = make_test_pki(tmp_path / "pki")
    p12 = base64.b64encode(pki.seal_p12.read_bytes()).decode()
    r = await check_instance(rt, inst("signature", "seal", p12_base64=p12, p12_password=pki.password))
    assert r.ok and "Le cachet s'ouvre" in r.message
    r = await check_instance(rt, inst("signature", "seal", p12_base64=p12, p12_password="faux"))
    assert r.ok is False and "Le cachet ne s'ouvre pas" in r.message
    r = await check_instance(rt, inst("sae", "store", seal_p12_path=str(pki.seal_p12),
                                      seal_p12_password=pki.password))
    assert r.ok and "Stockage des archives disponible" in r.message


async def test_smtp_unreachable_and_test_connectors(rt):
    r = await check_instance(rt, inst("notify", "smtp", host="127.0.0.1", port=_free_port(), from_address="a@b.fr"))
    assert r.ok is False and "injoignable" in r.message
    r = await check_instance(rt, inst("notify", "test"))
    assert r.ok is None and "aucun système extérieur n'a été contacté" in r.message

"""As@lae REST client against the simulator over real HTTP: accept, reject with its reply code, HTTP 500,
a refused login, a resend of the same transfer, delayed acknowledgement and reply, a corrupted attachment."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from flowbus.archive import seda
from flowbus.archive.asalae import AsalaeClient
from flowbus.archive.asalae_sim import AsalaeSimulator
from flowbus.archive.package import build_package
from flowbus.archive.seal import InternalTimestamper, Sealer
from flowbus.clock import ManualClock
from flowbus.errors import PermanentError, TransientError

XSD = Path(__file__).resolve().parents[2] / ".." / "shared" / "schemas" / "seda"


def _transfer(message_id: str) -> seda.Transfer:
    return seda.Transfer(message_id=message_id, date=datetime(2026, 11, 23, tzinfo=UTC), title="Délibération",
                         archival_agency="AD34", transferring_agency="21340000000017")


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def _package(tmp_path, pki, make_source, message_id: str) -> tuple[bytes, Path]:
    result = await build_package(tmp_path / f"{message_id}.zip", _transfer(message_id),
                                 [make_source(b"%PDF-1.7\nacte", "acte.pdf"), make_source(b"<a/>", "ar.xml")],
                                 sealer=Sealer(pki.seal, InternalTimestamper(pki.tsa)), xsd_dir=XSD)
    return result.manifest, result.path


async def test_accept_then_reject_with_reply_code(tmp_path, pki, make_source, session):
    clock = ManualClock(datetime(2026, 11, 23, 10, tzinfo=UTC))
    async with AsalaeSimulator(login="cg34", password="s3cret", clock=clock, xsd_dir=XSD,
                               delays={"ack": timedelta(minutes=1), "reply": timedelta(hours=2)}) as sim:
        client = AsalaeClient(sim.url, "cg34", "s3cret", session=session)
        await client.ping()
        assert "2.1" in (await client.versions())["seda"]
        manifest, path = await _package(tmp_path, pki, make_source, "TR-OK")
        assert await client.send_transfer(manifest, path, transfer_id="TR-OK") is True
        assert await client.acknowledgement("21340000000017", "TR-OK") is None  # not yet
        clock.advance(minutes=1)
        ack = await client.acknowledgement("21340000000017", "TR-OK")
        seda.validate(ack, XSD)
        assert seda.parse_reply(ack)["request_id"] == "TR-OK"
        assert await client.reply("21340000000017", "TR-OK") is None
        clock.advance(hours=2)
        reply = await client.reply("21340000000017", "TR-OK")
        seda.validate(reply, XSD)
        assert seda.parse_reply(reply)["reply_code"] == "000"
        # the same transfer sent again is not received twice
        assert await client.send_transfer(manifest, path, transfer_id="TR-OK") is False
        assert len(sim.transfers) == 1

        sim.script("TR-KO", "reject", "301", "Profil d'archives inconnu")
        manifest, path = await _package(tmp_path, pki, make_source, "TR-KO")
        await client.send_transfer(manifest, path, transfer_id="TR-KO")
        clock.advance(hours=3)
        reply = seda.parse_reply(await client.reply("21340000000017", "TR-KO"))
        assert (reply["reply_code"], reply["comment"]) == ("301", "Profil d'archives inconnu")
        assert await client.reply("21340000000017", "TR-UNKNOWN") is None


async def test_http_500_is_transient_and_bad_login_permanent(tmp_path, pki, make_source, session):
    async with AsalaeSimulator(xsd_dir=XSD, fail={"send": [500]}) as sim:
        client = AsalaeClient(sim.url, "flowbus", "flowbus", session=session)
        manifest, path = await _package(tmp_path, pki, make_source, "TR-500")
        with pytest.raises(TransientError, match="HTTP 500"):
            await client.send_transfer(manifest, path, transfer_id="TR-500")
        assert await client.send_transfer(manifest, path, transfer_id="TR-500") is True
        with pytest.raises(PermanentError) as err:
            await AsalaeClient(sim.url, "flowbus", "wrong", session=session).ping()
        assert err.value.field == "login"
        sim.down = True
        with pytest.raises(TransientError):
            await client.reply("21340000000017", "TR-500")
    with pytest.raises(TransientError):  # the server is gone
        await client.ping()


async def test_invalid_manifest_and_corrupted_attachment(tmp_path, pki, make_source, session):
    async with AsalaeSimulator(xsd_dir=XSD) as sim:
        client = AsalaeClient(sim.url, "flowbus", "flowbus", session=session)
        manifest, path = await _package(tmp_path, pki, make_source, "TR-BAD")
        with pytest.raises(PermanentError, match="Bordereau invalide"):
            await client.send_transfer(manifest.replace(b"<Title>", b"<Titre>").replace(b"</Title>", b"</Titre>"),
                                       path, transfer_id="TR-BAD")
        corrupted = tmp_path / "corrupted.zip"
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(corrupted, "w") as zout:
            for name in zin.namelist():
                data = zin.read(name)
                zout.writestr(name, data + b"!" if name.endswith("acte.pdf") else data)
        await client.send_transfer(manifest, corrupted, transfer_id="TR-BAD")
        reply = seda.parse_reply(await client.reply("21340000000017", "TR-BAD"))
        assert reply["reply_code"] == "202" and "content/001-acte.pdf" in reply["comment"]

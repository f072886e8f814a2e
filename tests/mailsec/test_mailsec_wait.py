"""Waiting for reads: refusals, bounces, reminders, replies through Chromium, resend, receipts, deadline."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from playwright.async_api import async_playwright

from flowbus import documents
from flowbus.clock import ManualClock

pytestmark = pytest.mark.chromium

DSN = """From: MAILER-DAEMON@mx.agents.example.fr
To: rebonds+{rid}@mairie.example.fr
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system at host mx.agents.example.fr.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.agents.example.fr

Final-Recipient: rfc822; charlie@agents.example.fr
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full

--b1--
"""


async def _poll(fn, timeout: float = 20.0):
    import asyncio
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_wait_for_read_reminders_bounce_reply_resend_deadline(runtime_factory, server_factory, mailsec_config,
                                                                      smtp, wait_state, ms, tmp_path):
    clock = ManualClock()
    rt = await runtime_factory("embedded", config_dir=mailsec_config, clock=clock)
    srv = await server_factory(rt)
    async with srv.client() as api:
        entity = (await (await api.post("/api/v1/entities", json={"name": "Mairie"})).json())["id"]

        async def make(dest: str, objet: str) -> str:
            r = await api.post("/api/v1/documents", json={"entity": entity, "flow": "courrier-lu",
                                                          "fields": {"objet": objet, "destinataires": dest}})
            assert r.status == 201, await r.text()
            doc = (await r.json())["id"]
            r = await api.put(f"/api/v1/documents/{doc}/files/piece", data=b"convocation " + objet.encode(),
                              params={"filename": "convocation.txt"}, headers={"Content-Type": "text/plain"})
            assert r.status == 201, await r.text()
            assert (await api.post(f"/api/v1/documents/{doc}/actions/start")).status in (200, 202)
            return doc

        doc = await make("alice@agents.example.fr, bob@agents.example.fr; refuse@agents.example.fr "
                         "charlie@agents.example.fr", "Conseil <du> 12")
        late = await make("lent@agents.example.fr", "Relance")
        await wait_state(rt, doc, "waiting")
        await wait_state(rt, late, "waiting")

        async def status() -> dict[str, dict]:
            body = await (await api.get(f"/api/v1/documents/{doc}/mailsec")).json()
            return {r["address"]: r for r in body["mailings"][0]["recipients"]}

        st = await status()
        assert list(st) == ["alice@agents.example.fr", "bob@agents.example.fr", "refuse@agents.example.fr",
                            "charlie@agents.example.fr", "copie@mairie.example.fr"]
        assert st["refuse@agents.example.fr"]["status"] == "undelivered"
        assert st["refuse@agents.example.fr"]["status_label"] == "non délivré"
        assert "550" in st["refuse@agents.example.fr"]["error"]
        assert st["copie@mairie.example.fr"]["kind"] == "cc" and st["alice@agents.example.fr"]["status"] == "sent"
        [first] = smtp.to("bob@agents.example.fr")
        assert first.message()["Subject"] == "Objet : Conseil <du> 12"
        assert "Conseil &lt;du&gt; 12" in (first.html() or "")

        # a bounce delivered to the bounce mailbox marks charlie « non délivré » at the next check
        charlie = st["charlie@agents.example.fr"]["id"]
        (tmp_path / "rebonds" / "new" / "1.dsn").write_text(DSN.format(rid=charlie))
        st = await _poll(lambda: _when(status(), lambda s: s["charlie@agents.example.fr"]["status"] == "undelivered"))
        assert "552" in st["charlie@agents.example.fr"]["error"]
        # an administrator resends: a fresh link, delivered this time; refuse@ is refused again
        r = await api.post(f"/api/v1/documents/{doc}/mailsec/{charlie}/resend")
        assert r.status == 200, await r.text()
        assert (await r.json())["status"] == "sent" and (await r.json())["resent"] == 1
        refused_id = st["refuse@agents.example.fr"]["id"]
        r = await api.post(f"/api/v1/documents/{doc}/mailsec/{refused_id}/resend")
        assert (await r.json())["status"] == "undelivered" and (await r.json())["resent"] == 1
        r = await api.post(f"/api/v1/documents/{doc}/mailsec/nope/resend")
        assert r.status == 404

        # two days later the unread get a reminder with a fresh link; the first link still works
        clock.advance(days=2, minutes=1)
        await _poll(lambda: _true(len(smtp.to("bob@agents.example.fr")) == 2))
        reminder = smtp.to("bob@agents.example.fr")[1]
        assert reminder.message()["Subject"] == "Rappel : Objet : Conseil <du> 12"
        bob_links = ms.links_to(smtp, "bob@agents.example.fr")
        assert len(set(bob_links)) == 2
        await _poll(lambda: _true(len(smtp.to("lent@agents.example.fr")) == 2))

        # alice answers from the page in Chromium, with a file, without JavaScript
        reply_file = tmp_path / "justificatif.txt"
        reply_file.write_bytes(b"piece justificative")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=ms.CHROMIUM_ARGS)
            try:
                context = await browser.new_context(java_script_enabled=False)
                page = await context.new_page()
                await page.goto(ms.links_to(smtp, "alice@agents.example.fr")[0])
                assert await page.locator("h1").inner_text() == "Objet : Conseil <du> 12"
                await page.get_by_label("Votre message").fill("Je serai présente.")
                await page.get_by_label("Fichiers joints").set_input_files(str(reply_file))
                await page.get_by_role("button", name="Envoyer la réponse").click()
                await page.wait_for_load_state()
                assert "Votre réponse a bien été transmise" in await page.locator("main").inner_text()
            finally:
                await browser.close()

        st = await status()
        assert st["alice@agents.example.fr"]["status"] == "read" and st["bob@agents.example.fr"]["status"] == "sent"
        assert (await documents.get_document(rt, doc)).state == "waiting"

        async with srv.client() as anonymous:
            r = await anonymous.get(bob_links[1].split(srv.url, 1)[1])
            assert r.status == 200 and "convocation.txt" in await r.text()
            copie_link = ms.links_to(smtp, "copie@mairie.example.fr")[0]
            assert (await anonymous.get(copie_link.split(srv.url, 1)[1])).status == 200
            charlie_link = ms.links_to(smtp, "charlie@agents.example.fr")[-1]
            assert (await anonymous.get(charlie_link.split(srv.url, 1)[1])).status == 200

        done = await wait_state(rt, doc, "done", timeout=20)
        assert done.fields["mailsec_read"] == 4 and done.fields["mailsec_undelivered"] == 1
        assert done.fields["mailsec_unread"] == 0
        replies = done.files_of("mailsec_reponses")
        assert replies, [(f.field, f.filename) for f in done.files]
        assert sorted(f.filename for f in replies)[0] == "justificatif.txt"
        text_reply = [f for f in replies if f.filename.startswith("reponse-alice")]
        assert len(text_reply) == 1
        assert "Je serai présente." in (await rt.blobs.read(text_reply[0].blob_key)).decode()
        assert await rt.blobs.read([f for f in replies if f.filename == "justificatif.txt"][0].blob_key) == \
            b"piece justificative"
        [receipts] = done.files_of("mailsec_accuses")
        rows = list(csv.reader(io.StringIO((await rt.blobs.read(receipts.blob_key)).decode("utf-8-sig")),
                               delimiter=";"))
        by_addr = {row[0]: row for row in rows[1:]}
        assert by_addr["alice@agents.example.fr"][2] == "lu" and by_addr["refuse@agents.example.fr"][2] == "non délivré"
        assert by_addr["bob@agents.example.fr"][4]  # read date
        kinds = [e["kind"] for e in (await (await api.get(f"/api/v1/documents/{doc}/journal")).json())["items"]]
        assert kinds.count("mailsec.read") == 4 and "mailsec.reply" in kinds and kinds.count("mailsec.resent") == 2

        # the other document is never read: at most 2 reminders, then the deadline routes it to « non lu »
        clock.advance(days=2, minutes=1)
        await _poll(lambda: _true(len(smtp.to("lent@agents.example.fr")) == 3))
        clock.advance(days=2, minutes=1)
        clock.advance(days=5)
        final = await wait_state(rt, late, "non_lu", timeout=20)
        assert len(smtp.to("lent@agents.example.fr")) == 3  # the first message + max_reminders
        assert final.fields["mailsec_unread"] == 2 and final.fields["mailsec_read"] == 0  # lent@ and the cc
        assert final.files_of("mailsec_accuses")


async def _when(coro, predicate):
    value = await coro
    return value if predicate(value) else None


async def _true(value: bool) -> bool:
    return value

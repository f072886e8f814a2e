"""200 payslips through config/flows/rh-paie.yml to a real SMTP server; links opened in headless Chromium."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog
from playwright.async_api import async_playwright

from flowbus.connectors.mailsec import store
from tests.support.pdfs import pdf as text_pdf

pytestmark = pytest.mark.chromium

N = 200


def pdf(i: int) -> bytes:
    return text_pdf(f"bulletin de paie agent {i}")


async def test_200_payslips_each_link_marks_exactly_its_recipient(backend, runtime_factory, server_factory,
                                                                   mailsec_config, smtp, wait_state, caplog, ms):
    LINK, PASSWORD, CHROMIUM_ARGS = ms.LINK, ms.PASSWORD, ms.CHROMIUM_ARGS
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="mail.log")  # the simulated remote server's own chatter
    with structlog.testing.capture_logs() as logs:
        rt = await runtime_factory(backend, config_dir=mailsec_config)
        srv = await server_factory(rt)
        async with srv.client() as api:
            r = await api.post("/api/v1/entities", json={"name": "Ville de Test"})
            assert r.status == 201, await r.text()
            entity = (await r.json())["id"]

            async def one(i: int) -> str:
                r = await api.post("/api/v1/documents", json={"entity": entity, "flow": "rh-paie", "fields": {
                    "agent_nom": f"Agent n°{i} Éloïse", "agent_email": f"agent{i}@agents.example.fr",
                    "matricule": f"M{i:05d}", "periode": "2026-01"}})
                assert r.status == 201, await r.text()
                doc = (await r.json())["id"]
                r = await api.put(f"/api/v1/documents/{doc}/files/bulletin", data=pdf(i),
                                  params={"filename": f"bulletin-{i}.pdf"}, headers={"Content-Type": "application/pdf"})
                assert r.status == 201, await r.text()
                r = await api.post(f"/api/v1/documents/{doc}/actions/start")
                assert r.status in (200, 202), await r.text()
                return doc

            docs: list[str] = []
            # 5 uploads at a time: S3BlobStore.put deadlocks once every default-executor thread holds
            # an upload (its feeding also goes through the default executor) — reported to the lead
            for start in range(0, N, 5):
                docs += await asyncio.gather(*(one(i) for i in range(start, min(N, start + 5))))
            for doc in docs:
                await wait_state(rt, doc, "done", timeout=120)

            # every agent got exactly one message with his own link, and one with his password
            links: dict[int, str] = {}
            passwords: dict[int, str] = {}
            for i in range(N):
                got = smtp.to(f"agent{i}@agents.example.fr")
                assert len(got) == 2, (i, len(got))
                found = [LINK.findall(m.text()) for m in got]
                with_link = [f for f in found if f]
                assert len(with_link) == 1 and len(with_link[0]) == 1
                links[i] = with_link[0][0]
                [pw_msg] = [m for m, f in zip(got, found) if not f]
                passwords[i] = PASSWORD.search(pw_msg.text()).group(1)
            assert len(set(links.values())) == N
            first = smtp.to("agent5@agents.example.fr")[0]
            first = first if LINK.search(first.text()) else smtp.to("agent5@agents.example.fr")[1]
            assert first.message()["Subject"] == "Votre bulletin de paie de janvier 2026"  # config/mailsec/rh-paie
            assert "Bonjour Agent n°5 Éloïse," in first.text() and "mot de passe" in first.text()
            assert len(smtp.received) == 2 * N
            tokens_sent = [link.rsplit("/", 1)[1] for link in links.values()]

            # open the links of agents 3 and 7 in Chromium
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                try:
                    for i in (3, 7):
                        page = await browser.new_page()
                        resp = await page.goto(links[i])
                        assert resp.status == 200
                        assert await page.locator("h1").inner_text() == "Document protégé par un mot de passe"
                        await page.get_by_label("Mot de passe").fill(passwords[i])
                        await page.get_by_role("button", name="Accéder au document").click()
                        await page.wait_for_load_state()
                        body = await page.locator("main").inner_text()
                        assert f"bulletin-{i}.pdf" in body
                        for other in (2, 4, 8, 70):  # A's page never shows B's documents
                            assert f"bulletin-{other}.pdf" not in body
                        async with page.expect_download() as dl_info:
                            await page.get_by_role("link", name=f"Télécharger bulletin-{i}.pdf").click()
                        download = await dl_info.value
                        assert download.suggested_filename == f"bulletin-{i}.pdf"
                        assert open(await download.path(), "rb").read() == pdf(i)
                        await page.close()
                finally:
                    await browser.close()

            # exactly those two recipients have read; the API shows who has and who has not
            states = {}
            for i, doc in enumerate(docs):
                r = await api.get(f"/api/v1/documents/{doc}/mailsec")
                assert r.status == 200, await r.text()
                body = await r.json()
                [mailing] = body["mailings"]
                [recipient] = mailing["recipients"]
                assert recipient["address"] == f"agent{i}@agents.example.fr"
                states[i] = recipient
            read = sorted(i for i, rec in states.items() if rec["status"] == "read")
            assert read == [3, 7]
            assert states[3]["status_label"] == "lu" and states[3]["read_at"] and "Chrome" in \
                states[3]["read_user_agent"] and states[3]["read_ip"] == "127.0.0.1"
            assert all(rec["status"] == "sent" and rec["read_at"] is None for i, rec in states.items() if i not in (3, 7))
            r = await api.get(f"/api/v1/documents/{docs[3]}/journal")
            kinds = [e["kind"] for e in (await r.json())["items"]]
            assert "mailsec.read" in kinds and "mailsec.download" in kinds
            async with rt.store.transaction() as tx:
                assert await tx.fetchval("SELECT COUNT(*) FROM mailsec_recipients WHERE read_at IS NOT NULL") == 2
                # stored at rest: hashes only
                hashes = {r["token_hash"] for r in await tx.fetch("SELECT token_hash FROM mailsec_recipients")}
                assert not hashes & set(tokens_sent) and len(hashes) == N
                pw_hashes = [r["password_hash"] for r in await tx.fetch("SELECT password_hash FROM mailsec_recipients")]
                assert all(h.startswith("scrypt$") for h in pw_hashes)
            assert store.STATUS_LABELS["undelivered"] == "non délivré"
    # tokens never appear in logs (structlog events nor stdlib records)
    # (mail.log is the simulated remote SMTP server's own log: it sees the messages by design)
    ours = [rec for rec in caplog.records if not rec.name.startswith("mail.log")]
    text = repr(logs) + "\n".join(rec.getMessage() + repr(rec.__dict__) for rec in ours)
    assert logs, "the run logged nothing: the capture is broken"
    for token in tokens_sent:
        assert token not in text
    for pw_value in passwords.values():
        assert pw_value not in text

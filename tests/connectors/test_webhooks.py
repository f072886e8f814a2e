"""Webhooks: signature, per-document order, a receiver down for a while then back, the delivery log."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from flowbus.connectors import webhooks
from flowbus.models import Document, Entity
from flowbus.store import repo
from tests.support.pdfs import pdf

FAST = webhooks.WebhookPolicy(base_delay=0.05, max_delay=0.25, timeout=2.0, lease=5.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A business application's endpoint; ``start()`` again after ``stop()`` reuses the port."""

    def __init__(self, secret: str | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_with: int | None = None
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fail_with:
            return web.Response(status=self.fail_with)
        if self.secret and not webhooks.verify(self.secret, raw, request.headers.get(webhooks.SIGNATURE_HEADER)):
            self.bad_signatures += 1
            return web.Response(status=401)
        event = json.loads(raw)
        assert request.headers[webhooks.EVENT_HEADER] == event["id"]
        self.received.append(event)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def _entity(rt: Any, eid: str = "ville", parent: str | None = None) -> None:
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity(eid, eid.title(), None, parent, rt.clock.now()))


def _doc(rt: Any, i: int, entity: str = "ville") -> Document:
    now = rt.clock.now()
    return Document(f"doc-{i:04d}", entity, "demo", "draft", {}, 1, now, now)


async def _change(rt: Any, service: webhooks.WebhookService, doc: Document, old: str, new: str) -> Document:
    doc = replace(doc, state=new, version=doc.version + 1)
    async with rt.store.transaction() as tx:
        await service.on_state_change(tx, doc, old, new)
    return doc


async def _until(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_signature_is_hmac_sha256_of_raw_body() -> None:
    import hashlib
    import hmac
    body = b'{"id":"e1"}'
    expected = "sha256=" + hmac.new(b"0123456789abcdef", body, hashlib.sha256).hexdigest()
    assert webhooks.sign("0123456789abcdef", body) == expected
    assert webhooks.verify("0123456789abcdef", body, expected)
    assert not webhooks.verify("0123456789abcdef", body + b" ", expected)
    assert not webhooks.verify("another-secret-xx", body, expected)


def test_backoff_grows_and_is_capped() -> None:
    policy = webhooks.WebhookPolicy(base_delay=2, max_delay=60)
    delays = [policy.delay(n) for n in range(1, 10)]
    assert 1.8 <= delays[0] <= 2.2 and 3.6 <= delays[1] <= 4.4
    assert max(delays) <= 60 and delays[-1] >= 54


async def test_url_checks(runtime_factory) -> None:
    rt = await runtime_factory("embedded", workers=False)
    await _entity(rt)
    service = webhooks.WebhookService(rt, FAST)
    from flowbus.errors import NotFound, ValidationError
    with pytest.raises(ValidationError) as err:
        await service.create(entity_id="ville", url="http://example.org/hook", actor="t")
    assert err.value.field == "url"
    with pytest.raises(ValidationError):
        await service.create(entity_id="ville", url="ftp://example.org/", actor="t")
    with pytest.raises(ValidationError) as err:
        await service.create(entity_id="ville", url="https://example.org/", actor="t", flows=["nope"])
    assert err.value.field == "flows"
    with pytest.raises(NotFound):
        await service.create(entity_id="absent", url="https://example.org/", actor="t")
    hook, secret = await service.create(entity_id="ville", url="https://example.org/h", actor="t")
    assert len(secret) >= 32 and "secret" not in hook


async def test_receiver_down_then_back_gets_every_event_in_order(backend, runtime_factory) -> None:
    rt = await runtime_factory(backend, workers=False)
    await _entity(rt)
    await _entity(rt, "ecole", parent="ville")
    service = webhooks.install(rt, FAST)
    await service.start()
    receiver = Receiver()
    hook, secret = await service.create(entity_id="ville", url=receiver.url, actor="test")
    receiver.secret = secret
    # receiver down (nothing listens): 30 documents × 4 state changes, one entity below the webhook's
    states = ["draft", "running", "waiting", "running", "done"]
    docs = [_doc(rt, i, "ecole" if i % 3 == 0 else "ville") for i in range(30)]
    for step in range(4):
        for i, d in enumerate(docs):
            docs[i] = await _change(rt, service, d, states[step], states[step + 1])
    await asyncio.sleep(1.0)
    async with rt.store.transaction() as tx:
        failed_attempts = await tx.fetchval("SELECT COUNT(*) FROM webhook_attempts WHERE status_code IS NULL")
        delivered = await tx.fetchval("SELECT COUNT(*) FROM webhook_events WHERE status = 'delivered'")
    assert failed_attempts >= 30 and delivered == 0
    # back up: every event arrives, once, in sequence for each document
    await receiver.start()
    try:
        await _until(lambda: len(receiver.received) >= 120)
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 120
        assert receiver.bad_signatures == 0
        by_doc: dict[str, list[dict[str, Any]]] = {}
        for ev in receiver.received:
            by_doc.setdefault(ev["document"]["id"], []).append(ev)
        assert len(by_doc) == 30
        for events in by_doc.values():
            assert [e["sequence"] for e in events] == [1, 2, 3, 4]
            assert [e["document"]["state"] for e in events] == states[1:]
            assert [e["document"]["previous_state"] for e in events] == states[:-1]
        assert len({e["id"] for e in receiver.received}) == 120
        log = await service.deliveries(hook["id"], document_id="doc-0001")
        assert [d["sequence"] for d in log] == [4, 3, 2, 1]
        assert all(d["status"] == "delivered" for d in log)
        first = log[-1]
        assert first["attempts"] >= 2 and first["log"][-1]["status_code"] == 204
        assert first["log"][0]["status_code"] is None and "Connect" in first["log"][0]["error"]
    finally:
        await receiver.stop()


async def test_http_errors_are_retried_and_filters_apply(runtime_factory) -> None:
    rt = await runtime_factory("embedded", workers=False)
    await _entity(rt)
    await _entity(rt, "autre")
    service = webhooks.install(rt, FAST)
    await service.start()
    receiver = Receiver()
    await receiver.start()
    try:
        hook, receiver.secret = await service.create(entity_id="ville", url=receiver.url, actor="test",
                                                     states=["done", "error"])
        receiver.fail_with = 500
        d = _doc(rt, 1)
        d = await _change(rt, service, d, "draft", "running")  # filtered out (state)
        d = await _change(rt, service, d, "running", "done")
        await _change(rt, service, _doc(rt, 2, "autre"), "draft", "done")  # another entity: not sent
        await asyncio.sleep(0.6)
        assert receiver.received == []
        log = await service.deliveries(hook["id"])
        assert len(log) == 1 and log[0]["status"] == "pending" and log[0]["last_status"] == 500
        receiver.fail_with = None
        await _until(lambda: len(receiver.received) == 1)
        assert receiver.received[0]["document"]["state"] == "done"
        await service.delete(hook["id"], actor="test")
        await _change(rt, service, d, "done", "error")
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1
    finally:
        await receiver.stop()


async def test_webhooks_api_and_engine_state_changes(backend, runtime_factory, server_factory, wait_state) -> None:
    rt = await runtime_factory(backend)
    webhooks.install(rt, FAST)
    srv = await server_factory(rt)
    receiver = Receiver()
    await receiver.start()
    try:
        async with srv.client() as http:
            r = await http.post("/api/v1/entities", json={"name": "Ville de Test"})
            assert r.status == 201, await r.text()
            entity = (await r.json())["id"]
            r = await http.post("/api/v1/webhooks", json={"entity": entity, "url": receiver.url,
                                                         "flows": ["demo"]})
            assert r.status == 201, await r.text()
            created = await r.json()
            receiver.secret = created["secret"]
            r = await http.get("/api/v1/webhooks")
            listed = (await r.json())["webhooks"]
            assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]
            r = await http.post("/api/v1/documents", json={"entity": entity, "flow": "demo",
                                                          "fields": {"title": "Essai"}})
            assert r.status == 201, await r.text()
            doc_id = (await r.json())["id"]
            r = await http.put(f"/api/v1/documents/{doc_id}/files/file", params={"filename": "essai.pdf"},
                               data=pdf("essai"), headers={"Content-Type": "application/pdf"})
            assert r.status == 201, await r.text()
            r = await http.post(f"/api/v1/documents/{doc_id}/actions/start")
            assert r.status in (200, 202), await r.text()
            doc = await wait_state(rt, doc_id, ("done", "error"))
            await _until(lambda: receiver.received and receiver.received[-1]["document"]["state"] == doc.state)
            states = [e["document"]["state"] for e in receiver.received]
            assert states[0] == "running" and states[-1] == doc.state
            assert [e["sequence"] for e in receiver.received] == list(range(1, len(states) + 1))
            r = await http.get(f"/api/v1/webhooks/{created['id']}/deliveries", params={"document": doc_id})
            assert r.status == 200
            assert len((await r.json())["deliveries"]) == len(states)
            r = await http.delete(f"/api/v1/webhooks/{created['id']}")
            assert r.status == 204
            r = await http.get(f"/api/v1/webhooks/{created['id']}")
            assert r.status == 404
    finally:
        await receiver.stop()



async def test_worker_only_process_announces_state_changes(runtime_factory, wait_state) -> None:
    """No HTTP app in this process: ``start_background`` is what a worker-only process runs."""
    from flowbus import documents
    from flowbus.connectors.inbound import start_background

    rt = await runtime_factory("embedded")
    await _entity(rt)
    await start_background(rt)
    await start_background(rt)  # idempotent
    assert rt.state_hooks.count(rt.webhooks.on_state_change) == 1
    receiver = Receiver()
    await receiver.start()
    try:
        _hook, receiver.secret = await rt.webhooks.create(entity_id="ville", url=receiver.url, actor="test")
        doc = await documents.create_document(rt, entity_id="ville", flow_id="demo", fields={"title": "T"},
                                              actor="test")

        async def one() -> Any:
            yield pdf("t")

        await documents.attach_file(rt, doc.id, "file", filename="t.pdf", media_type="application/pdf",
                                    chunks=one(), actor="test")
        await documents.run_action(rt, doc.id, "start", actor="test")
        await wait_state(rt, doc.id, "done")
        await _until(lambda: [e["document"]["state"] for e in receiver.received][-1:] == ["done"])
        assert [e["sequence"] for e in receiver.received] == list(range(1, len(receiver.received) + 1))
    finally:
        await receiver.stop()

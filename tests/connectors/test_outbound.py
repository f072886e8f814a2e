"""Outbound request policy: webhook and connector URLs to loopback, link-local and private addresses are refused at
registration and at call time, in French, naming the rule; once the operator allows them (FLOWBUS_OUTBOUND_ALLOW)
they work. Every target here is a real server on loopback (nothing is ever sent to 10.0.0.1 or 169.254.169.254)."""

from __future__ import annotations

import asyncio
import ipaddress
import textwrap

import pytest
from aiohttp import web

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
from flowbus.errors import ConfigError
from flowbus.outbound import LOOPBACK, STRICT, OutboundPolicy, OutboundRefused, client_session, reason

REFUSED = "Adresse refusée par la politique de sortie"


class Receiver:
    """A real HTTP server on ``host``: records what it receives; ``redirect`` sends every request elsewhere."""

    def __init__(self, host: str = "127.0.0.1", redirect: str | None = None) -> None:
        self.host, self.redirect, self.received = host, redirect, []

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((request.method, request.path, await request.read()))
        if self.redirect:
            raise web.HTTPTemporaryRedirect(self.redirect)
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.url = f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def test_default_policy_names_each_rule():
    cases = {"127.0.0.1": "bouclage", "::1": "bouclage", "::ffff:127.0.0.1": "bouclage",
             "169.254.169.254": "lien-local", "fe80::1": "lien-local", "10.0.0.1": "privée",
             "172.16.5.4": "privée", "192.168.1.1": "privée", "fd00::1": "privée", "224.0.0.1": "multidiffusion",
             "0.0.0.0": "non spécifiée", "100.64.0.1": "partagée", "240.0.0.1": "réservée"}
    for address, word in cases.items():
        assert word in reason(ipaddress.ip_address(address)), address
    for public in ("8.8.8.8", "2a00:1450:4007::1", "193.51.24.1"):
        assert reason(ipaddress.ip_address(public)) is None
    policy = OutboundPolicy.parse("127.0.0.1, 10.0.0.0/8, s2low.example, *.interne.example")
    assert policy.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "une adresse de bouclage"
    assert policy.host_allowed("S2LOW.example.") and policy.host_allowed("ged.interne.example")
    assert not policy.host_allowed("interne.example.evil")
    with pytest.raises(ConfigError, match="FLOWBUS_OUTBOUND_ALLOW"):
        OutboundPolicy.parse("127.0.0.1, pas une adresse!")


async def test_a_wrong_allow_list_stops_the_start(settings_factory):
    with pytest.raises(Exception, match="FLOWBUS_OUTBOUND_ALLOW"):
        await settings_factory("embedded", outbound_allow="10.0.0.0/8,http://x")


@pytest.mark.parametrize("target", ["http://127.0.0.1:5432/", "http://[::1]:5432/", "http://169.254.169.254/latest/",
                                    "http://10.0.0.1/hook", "http://localhost:5432/", "ftp://example.org/"])
async def test_webhook_and_connector_urls_refused_at_registration(runtime_factory, server_factory, target):
    rt = await runtime_factory("embedded", workers=False, outbound_allow="")
    srv = await server_factory(rt)
    async with srv.client() as api:
        entity = (await (await api.post("/api/v1/entities", json={"name": "Commune A"})).json())["id"]
        r = await api.post("/api/v1/webhooks", json={"entity": entity, "url": target})
        problem = await r.json()
        assert r.status == 422, problem
        assert problem["detail"].startswith(REFUSED) and problem["field"] == "url"
        rule = "schéma « ftp »" if target.startswith("ftp") else "FLOWBUS_OUTBOUND_ALLOW"
        assert rule in problem["detail"]
        r = await api.put("/api/v1/connectors/ged", json={"entity": entity, "family": "ged", "kind": "webdav",
                                                          "settings": {"url": target}})
        problem = await r.json()
        assert r.status == 422 and problem["detail"].startswith(REFUSED) and problem["field"] == "url", problem
        async with rt.store.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM webhooks") == 0
            assert await tx.fetchval("SELECT COUNT(*) FROM connector_instances") == 0


async def test_rules_are_named_in_french(runtime_factory, server_factory):
    rt = await runtime_factory("embedded", workers=False, outbound_allow="")
    srv = await server_factory(rt)
    expected = {"http://127.0.0.1:1/": "127.0.0.1 est une adresse de bouclage",
                "http://[::1]:1/": "::1 est une adresse de bouclage",
                "http://169.254.169.254/": "169.254.169.254 est une adresse lien-local",
                "http://10.0.0.1/": "10.0.0.1 est une adresse privée",
                "http://localhost:1/": "localhost ("}
    async with srv.client() as api:
        entity = (await (await api.post("/api/v1/entities", json={"name": "Commune A"})).json())["id"]
        for url, words in expected.items():
            problem = await (await api.post("/api/v1/webhooks", json={"entity": entity, "url": url})).json()
            assert words in problem["detail"], problem
        # an SMTP host and an S3 endpoint are checked too
        for kind, settings, field in (("smtp", {"host": "localhost", "port": 25, "from_address": "a@b.fr"}, "host"),):
            r = await api.put("/api/v1/connectors/mail", json={"entity": entity, "family": "mailsec", "kind": kind,
                                                               "settings": settings})
            problem = await r.json()
            assert r.status == 422 and problem["field"] == field and "bouclage" in problem["detail"], problem
        r = await api.put("/api/v1/connectors/g3", json={"entity": entity, "family": "ged", "kind": "s3",
                                                         "settings": {"endpoint": "169.254.169.254:9000",
                                                                      "access_key": "a", "secret_key": "b",
                                                                      "bucket": "c"}})
        assert r.status == 422 and (await r.json())["field"] == "endpoint"


async def test_allowed_by_the_operator_webhook_is_registered_and_delivered(runtime_factory, server_factory,
                                                                            wait_state, tmp_path, engine_config):
    async with Receiver() as receiver:
        for allow, host in (("127.0.0.1", "127.0.0.1"), ("localhost", "localhost")):
            receiver.received.clear()
            rt = await runtime_factory("embedded", outbound_allow=allow, data_dir=tmp_path / allow,
                                       config_dir=engine_config)
            srv = await server_factory(rt)
            async with srv.client() as api:
                entity = (await (await api.post("/api/v1/entities", json={"name": "Commune A"})).json())["id"]
                r = await api.post("/api/v1/webhooks",
                                   json={"entity": entity, "url": f"http://{host}:{receiver.port}/hook"})
                assert r.status == 201, await r.text()
                doc = await documents.create_document(rt, entity_id=entity, flow_id="four",
                                                      fields={"title": "t"}, actor="t")
                await documents.run_action(rt, doc.id, "start", actor="t")
                await wait_state(rt, doc.id, "done")
            for _ in range(200):
                if receiver.received:
                    break
                await asyncio.sleep(0.05)
            assert receiver.received and receiver.received[0][1] == "/hook"


async def test_webhook_refused_at_call_time_when_the_operator_narrows_the_list(runtime_factory, server_factory,
                                                                             wait_state, engine_config):
    async with Receiver() as receiver:
        rt = await runtime_factory("embedded", workers=False, config_dir=engine_config)  # loopback allowed (tests)
        srv = await server_factory(rt)
        async with srv.client() as api:
            entity = (await (await api.post("/api/v1/entities", json={"name": "Commune A"})).json())["id"]
            r = await api.post("/api/v1/webhooks", json={"entity": entity, "url": f"{receiver.url}/hook"})
            assert r.status == 201
            hook = (await r.json())["id"]
        await rt.close()
        # same store, the operator removed loopback from FLOWBUS_OUTBOUND_ALLOW
        rt = await runtime_factory("embedded", outbound_allow="", config_dir=engine_config)
        from flowbus.connectors.inbound import start_background
        await start_background(rt)  # the webhook deliveries of a worker process
        doc = await documents.create_document(rt, entity_id=entity, flow_id="four", fields={"title": "t"}, actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        await wait_state(rt, doc.id, "done")
        deliveries = []
        for _ in range(200):
            deliveries = [d for d in await rt.webhooks.deliveries(hook) if d["attempts"]]
            if deliveries:
                break
            await asyncio.sleep(0.05)
        (first,) = deliveries  # the stream waits behind its first event, which is retried later
        assert first["last_error"].startswith(REFUSED), first
        assert "127.0.0.1 est une adresse de bouclage" in first["last_error"]
        assert first["status"] == "pending" and receiver.received == []


def _notify_config(tmp_path, settings: str, kind: str = "http"):
    cfg = tmp_path / "cfg"
    (cfg / "flows").mkdir(parents=True, exist_ok=True)
    (cfg / "connectors").mkdir(exist_ok=True)
    (cfg / "connectors" / "n.yml").write_text(
        f"instances:\n  - {{id: pub, family: notify, kind: {kind}, entity: null, settings: {settings}}}\n")
    (cfg / "flows" / "pub.yml").write_text(textwrap.dedent("""\
        id: pub
        label: "Publication"
        description: "Notifie la publication"
        fields:
          - {name: objet, type: text, label: "Objet", required: true}
        steps:
          - {id: publication, label: "Publication", family: notify, connector: pub,
             params: {to: ["greffe@example.org"]}}
        """))
    return cfg


async def _publish(rt, wait_state, state):
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="pub", fields={"objet": "Arrêté"}, actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    return await wait_state(rt, doc.id, state, timeout=30)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "10.0.0.1", "169.254.169.254"])
async def test_connector_refused_at_call_time_then_allowed(runtime_factory, tmp_path, wait_state, host):
    async with Receiver() as receiver:
        port = receiver.port if host in ("127.0.0.1", "localhost") else 9
        cfg = _notify_config(tmp_path, f"{{url: 'http://{host}:{port}/publication', timeout: 3}}")
        rt = await runtime_factory("embedded", config_dir=cfg, outbound_allow="")
        doc = await _publish(rt, wait_state, "error")  # no retry: a refusal is permanent, shown on the document
        assert doc.last_error.startswith(REFUSED) and "FLOWBUS_OUTBOUND_ALLOW" in doc.last_error, doc.last_error
        assert receiver.received == []
        await rt.close()
        if host in ("127.0.0.1", "localhost"):
            rt = await runtime_factory("embedded", config_dir=cfg, outbound_allow=host)
            await documents.run_action(rt, doc.id, "retry", actor="admin")
            await wait_state(rt, doc.id, "done", timeout=30)
            assert receiver.received[0][:2] == ("POST", "/publication")


async def test_redirects_are_checked_again(runtime_factory, tmp_path, wait_state):
    async with Receiver(host="127.0.0.2") as inside:
        async with Receiver(redirect=f"{inside.url}/metadata") as outside:
            cfg = _notify_config(tmp_path, f"{{url: '{outside.url}/publication', timeout: 3}}")
            rt = await runtime_factory("embedded", config_dir=cfg, outbound_allow="127.0.0.1")
            doc = await _publish(rt, wait_state, "error")
            assert outside.received and inside.received == []
            assert "127.0.0.2 est une adresse de bouclage" in doc.last_error


async def test_smtp_server_refused_at_call_time(runtime_factory, tmp_path, wait_state):
    with SmtpSimulator() as smtp:
        cfg = _notify_config(tmp_path, f"{{host: localhost, port: {smtp.port}, starttls: false, "
                                       "from_address: mairie@example.org}", kind="smtp")
        rt = await runtime_factory("embedded", config_dir=cfg, outbound_allow="")
        doc = await _publish(rt, wait_state, "error")
        assert doc.last_error.startswith(REFUSED) and "localhost" in doc.last_error
        assert smtp.to("greffe@example.org") == []
        await rt.close()
        rt = await runtime_factory("embedded", config_dir=cfg, outbound_allow=LOOPBACK)
        await documents.run_action(rt, doc.id, "retry", actor="admin")
        await wait_state(rt, doc.id, "done", timeout=30)
        assert len(smtp.to("greffe@example.org")) == 1


async def test_session_resolver_filters_names_and_literals():
    async with Receiver() as receiver:
        async with client_session(STRICT) as http:
            for url in (f"{receiver.url}/", f"http://localhost:{receiver.port}/"):
                with pytest.raises(OutboundRefused, match="bouclage"):
                    await http.get(url)
        async with client_session(OutboundPolicy.parse(LOOPBACK)) as http:
            async with http.get(f"http://localhost:{receiver.port}/ok") as resp:
                assert resp.status == 204
        assert [r[1] for r in receiver.received] == ["/ok"]


async def test_timestamp_authority_goes_through_the_policy(tmp_path):
    from flowbus.signature.cades import sign_cades
    from flowbus.signature.pki import make_test_pki
    from flowbus.signature.tsa_sim import TsaSimulator
    pki = make_test_pki(tmp_path / "pki")
    with TsaSimulator(pki.tsa) as url:
        with pytest.raises(OutboundRefused, match="bouclage"):
            await asyncio.to_thread(sign_cades, b"contenu", pki.seal, tsa_url=url)
        assert await asyncio.to_thread(sign_cades, b"contenu", pki.seal, tsa_url=url,
                                       outbound=OutboundPolicy.parse(LOOPBACK))


async def test_console_connector_form_names_the_refusal(runtime_factory, server_factory, people):
    import re

    import aiohttp
    rt = await runtime_factory("embedded", workers=False, outbound_allow="")
    srv = await server_factory(rt)
    await people.admin(rt)
    entity = await create_entity(rt, name="Commune A", siren=None, parent=None, actor_name="t")
    async with aiohttp.ClientSession(base_url=srv.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async def csrf(path: str) -> str:
            async with http.get(path) as resp:
                return re.search(r'name="csrf" value="([^"]+)"', await resp.text()).group(1)
        async with http.post("/connexion", data={"login": "plateforme", "password": people.password,
                                                 "csrf": await csrf("/connexion")}, allow_redirects=False) as resp:
            assert resp.status == 302
        form = {"collectivite": entity.id, "family": "ged", "kind": "webdav", "id": "ged",
                "url": "http://169.254.169.254/latest/", "csrf": await csrf(f"/admin/connecteurs?collectivite={entity.id}")}
        async with http.post("/admin/connecteurs/enregistrer", data=form, allow_redirects=False) as resp:
            text = await resp.text()
            assert resp.status == 422
            assert "Adresse refusée par la politique de sortie : 169.254.169.254 est une adresse lien-local" in text
    async with rt.store.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM connector_instances") == 0

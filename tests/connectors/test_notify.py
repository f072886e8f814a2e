"""Step family notify: e-mail through a real local SMTP server, HTTP POST to a real receiver (signed, keyed)."""

from __future__ import annotations

import json
import textwrap

from aiohttp import web

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
from flowbus.connectors.webhooks import verify


def _config(tmp_path, instance_yaml: str, params: str):
    cfg = tmp_path / "cfg"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    (cfg / "connectors" / "n.yml").write_text("instances:\n" + textwrap.indent(instance_yaml, "  "))
    (cfg / "flows" / "pub.yml").write_text(textwrap.dedent(f"""\
        id: pub
        label: "Publication"
        description: "Notifie la publication"
        fields:
          - {{name: objet, type: text, label: "Objet", required: true}}
          - {{name: contact, type: email, label: "Contact"}}
        steps:
          - id: publication
            label: "Publication"
            family: notify
            connector: pub
            retry: {{attempts: 2, backoff: 1s, max_backoff: 1s}}
            params: {params}
        """))
    return cfg


async def _run(rt, wait_state, state="done"):
    ent = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(rt, entity_id=ent.id, flow_id="pub",
                                          fields={"objet": "Arrêté de circulation", "contact": "elu@example.org"},
                                          actor="t")
    await documents.run_action(rt, doc.id, "start", actor="t")
    return await wait_state(rt, doc.id, state, timeout=30)


async def test_notify_by_email(runtime_factory, tmp_path, wait_state):
    with SmtpSimulator() as smtp:
        cfg = _config(tmp_path, f"- {{id: pub, family: notify, kind: smtp, entity: null, settings: "
                                f"{{host: 127.0.0.1, port: {smtp.port}, starttls: false, "
                                f"from_address: mairie@example.org}}}}\n",
                      '{to: [contact, "greffe@example.org"], subject: "Publication : {{ fields.objet }}", '
                      'body: "L\'acte {{ fields.objet }} est publié."}')
        rt = await runtime_factory("embedded", config_dir=cfg)
        doc = await _run(rt, wait_state)
        for address in ("elu@example.org", "greffe@example.org"):
            [mail] = smtp.to(address)
            assert mail.message()["Subject"] == "Publication : Arrêté de circulation"
            assert "Arrêté de circulation est publié" in mail.text()
            assert mail.message()["X-Flowbus-Idempotency-Key"] == f"{doc.id}:publication:1"


async def test_notify_by_http_is_signed_and_keyed(runtime_factory, tmp_path, wait_state, unused_tcp_port):
    received = []
    status = {"code": 503}

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        received.append((dict(request.headers), body))
        return web.Response(status=status["code"])

    app = web.Application()
    app.router.add_post("/publication", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        cfg = _config(tmp_path, f"- {{id: pub, family: notify, kind: http, entity: null, settings: "
                                f"{{url: 'http://127.0.0.1:{unused_tcp_port}/publication', secret: s3cret}}}}\n", "{}")
        rt = await runtime_factory("embedded", config_dir=cfg)
        # the receiver is down (503) for both attempts: the document shows the error
        doc = await _run(rt, wait_state, "error")
        assert "503" in doc.last_error
        status["code"] = 204
        await documents.run_action(rt, doc.id, "retry", actor="admin")
        await wait_state(rt, doc.id, "done", timeout=30)
        headers, body = received[-1]
        assert verify("s3cret", body, headers["X-Flowbus-Signature"])
        payload = json.loads(body)
        assert payload["document"]["id"] == doc.id and payload["document"]["fields"]["objet"] == "Arrêté de circulation"
        assert headers["Idempotency-Key"] == payload["idempotency_key"]
        assert len({h["Idempotency-Key"] for h, _ in received}) == 3  # two failed attempts, then a new one
    finally:
        await runner.cleanup()

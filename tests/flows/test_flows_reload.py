"""Flows reloaded while the server runs: a new flow is usable at once, a broken file is refused alone (its last good
version stays in service), a document started before a change finishes on the version it started with, and another
process follows a reload it did not make."""

from __future__ import annotations

import textwrap
from pathlib import Path

from flowbus import documents, jobs
from flowbus.api.entities import create_entity

WAITING_V2 = """
    id: waiting
    label: "Attente (v2)"
    description: "Attend une réponse extérieure, puis une autre étape"
    fields:
      - {name: title, type: text, label: "Titre"}
    steps:
      - id: tdt
        label: "Télétransmission"
        family: tdt-actes
        connector: slow-answer
        wait: {check_every: 1s, deadline: 1h}
      - {id: autre, label: "Autre fin", family: notify, connector: ok}
"""

NEW_FLOW = """
    id: nouveau
    label: "Nouveau flux"
    description: "Ajouté pendant que le serveur tourne"
    fields:
      - {name: title, type: text, label: "Titre"}
    steps:
      - {id: seul, label: "Seule étape", family: notify, connector: ok}
"""


async def _steps_run(rt, doc_id: str) -> set[str]:
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT step FROM step_states WHERE document_id = $1", doc_id)
    return {r["step"] for r in rows}


async def test_reload_adds_refuses_alone_and_pins_running_documents(backend, runtime_factory, engine_config: Path,
                                                                   wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    commune = await create_entity(rt, name="Commune", siren=None, parent=None, actor_name="t")
    assert rt.flows["waiting"].version == 1 and rt.flows["four"].version == 1
    before = await documents.create_document(rt, entity_id=commune.id, flow_id="waiting", fields={"title": "a"},
                                             actor="t")
    await documents.run_action(rt, before.id, "start", actor="t")
    await wait_state(rt, before.id, "waiting", timeout=30)

    flows = engine_config / "flows"
    (flows / "waiting.yml").write_text(textwrap.dedent(WAITING_V2))
    (flows / "nouveau.yml").write_text(textwrap.dedent(NEW_FLOW))
    (flows / "four.yml").write_text((flows / "four.yml").read_text().replace("family: notify, connector: ok}\n",
                                                                             "family: nowhere, connector: ok}\n", 1))
    loaded = await rt.reload_flows(actor="test")

    assert sorted(loaded.new_versions) == [("nouveau", 1), ("waiting", 2)]
    assert [(Path(p.file).name, p.flow_id, p.kept_version) for p in loaded.problems] == [("four.yml", "four", 1)]
    assert "nowhere" in str(loaded.problems[0].errors[0])
    assert rt.flows["waiting"].version == 2 and rt.flows["waiting"].label == "Attente (v2)"
    assert rt.flows["four"].version == 1, "the broken file's last good version stays in service"

    # the document started on version 1 finishes on it; a new one runs version 2
    done = await wait_state(rt, before.id, "done", timeout=30)
    assert done.flow_version == 1
    assert await _steps_run(rt, before.id) == {"tdt", "last"}
    after = await documents.create_document(rt, entity_id=commune.id, flow_id="waiting", fields={"title": "b"},
                                            actor="t")
    await documents.run_action(rt, after.id, "start", actor="t")
    assert (await wait_state(rt, after.id, "done", timeout=30)).flow_version == 2
    assert await _steps_run(rt, after.id) == {"tdt", "autre"}

    # the new flow is usable without restart; the refused one keeps working on its kept version
    for flow_id in ("nouveau", "four"):
        doc = await documents.create_document(rt, entity_id=commune.id, flow_id=flow_id, fields={"title": "c"},
                                              actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        await wait_state(rt, doc.id, "done", timeout=30)

    # the file put back as it was: the same content is the same version, not a new one
    (flows / "four.yml").write_text((flows / "four.yml").read_text().replace("nowhere", "notify"))
    again = await rt.reload_flows(actor="test")
    assert again.new_versions == [] and again.problems == [] and rt.flows["four"].version == 1


async def test_another_process_follows_a_reload_and_reads_old_versions(backend, runtime_factory,
                                                                       engine_config: Path, wait_state):
    worker = await runtime_factory(backend, config_dir=engine_config)
    api = await runtime_factory(backend, config_dir=engine_config, workers=False,  # same store, another process
                                bus_prefix=worker.settings.bus_prefix, s3_bucket=worker.settings.s3_bucket)
    commune = await create_entity(api, name="Commune", siren=None, parent=None, actor_name="t")
    doc = await documents.create_document(api, entity_id=commune.id, flow_id="waiting", fields={"title": "a"},
                                          actor="t")
    await documents.run_action(api, doc.id, "start", actor="t")
    await wait_state(api, doc.id, "waiting", timeout=30)

    (engine_config / "flows" / "waiting.yml").write_text(textwrap.dedent(WAITING_V2))
    (engine_config / "flows" / "nouveau.yml").write_text(textwrap.dedent(NEW_FLOW))
    await api.reload_flows(actor="console")
    assert "nouveau" not in worker.flows
    assert await jobs.follow_flow_reloads(worker) is not None
    assert worker.flows["waiting"].version == 2 and "nouveau" in worker.flows
    assert await jobs.follow_flow_reloads(worker) is None, "one reload is applied once"

    # a process that never met version 1 (restarted since) still finishes the document on it
    worker.flow_history.clear()
    assert (await wait_state(api, doc.id, "done", timeout=30)).flow_version == 1
    assert await _steps_run(api, doc.id) == {"tdt", "last"}

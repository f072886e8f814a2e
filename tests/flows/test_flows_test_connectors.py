"""Test connectors: each alone (calls counted per key, effect log), then driven by the real engine."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from flowbus import documents
from flowbus.clock import SystemClock
from flowbus.connectors.base import ConnectorInstance, StepContext
from flowbus.connectors.registry import CONNECTOR_CLASSES, connector_class
from flowbus.connectors.testing import (
    CallCounter,
    FailNTimesConnector,
    InstantConnector,
    RejectConnector,
    WaitThenDoneConnector,
    calls_for,
    count_in_log,
    read_effect_log,
)
from flowbus.errors import TransientError
from flowbus.models import Document, Entity
from flowbus.store import repo


def test_registered_for_every_family() -> None:
    expected = {"test": InstantConnector, "test-fail": FailNTimesConnector, "test-reject": RejectConnector,
                "test-wait": WaitThenDoneConnector}
    for family in CONNECTOR_CLASSES:
        for kind, cls in expected.items():
            assert connector_class(family, kind) is cls, (family, kind)


def test_call_counter_counts_by_key_and_prefix() -> None:
    c = CallCounter()
    c.record(kind="test", instance="i", op="start", key="d1:s:1", step="s")
    c.record(kind="test", instance="i", op="start", key="d1:s:2", step="s")
    c.record(kind="test", instance="i", op="check", key="d1:s:2", step="s")
    c.record(kind="test", instance="i", op="start", key="d1:s2:1", step="s2")
    assert c.count("d1:s:1") == 1
    assert c.count("d1:s") == 2              # every attempt of step s, not s2
    assert c.count("d1:s", op=None) == 3
    assert c.count("d1") == 3
    assert c.total() == 3 and c.total(op=None) == 4
    assert c.by_key()["d1:s:2"] == 1


class _Rt:
    """Just what a test connector reads from the runtime: blobs (unused here) and its counter."""

    blobs = None


def _ctx(rt: Any, inst: ConnectorInstance, *, doc_id: str = "doc1", step: str = "sign", attempt: int = 1,
         data: dict | None = None) -> StepContext:
    clock = SystemClock()
    doc = Document(doc_id, "ent", "t", "running", {}, 1, clock.now(), clock.now())
    return StepContext(runtime=rt, document=doc, flow_id="t", step_id=step, params={}, instance=inst,
                       attempt=attempt, idempotency_key=f"{doc_id}:{step}:{attempt}", data=data or {},
                       started_at=clock.now(), log=structlog.get_logger())


async def test_fail_n_times_then_done_per_document_step(tmp_path: Path) -> None:
    rt = _Rt()
    log = tmp_path / "effects.log"
    inst = ConnectorInstance("flaky", "signature", "test-fail", None,
                             {"fail_times": 2, "retry_in": 0.5, "log_path": str(log)})
    conn = FailNTimesConnector(inst, rt)
    for attempt in (1, 2):
        with pytest.raises(TransientError) as info:
            await conn.start(_ctx(rt, inst, attempt=attempt))
        assert info.value.retry_in == 0.5
    # another document has its own count
    with pytest.raises(TransientError):
        await conn.start(_ctx(rt, inst, doc_id="doc2"))
    outcome = await conn.start(_ctx(rt, inst, attempt=3))
    assert outcome.status == "done"
    counter = calls_for(rt)
    assert counter.count("doc1:sign") == 3 and counter.count("doc1:sign:3") == 1 and counter.count("doc2") == 1
    lines = read_effect_log(log)
    assert [e["key"] for e in lines] == ["doc1:sign:1", "doc1:sign:2", "doc2:sign:1", "doc1:sign:3"]
    assert count_in_log(log, "doc1:sign") == 3


async def test_reject_and_wait_then_done() -> None:
    rt = _Rt()
    rej = RejectConnector(ConnectorInstance("r", "signature", "test-reject", None,
                                            {"reason": "Refus de l'élu", "outcome": "refused"}), rt)
    outcome = await rej.start(_ctx(rt, rej.instance))
    assert (outcome.status, outcome.name, outcome.reason) == ("rejected", "refused", "Refus de l'élu")

    inst = ConnectorInstance("w", "tdt-actes", "test-wait", None, {"checks": 3, "check_in": 0.2})
    waiter = WaitThenDoneConnector(inst, rt)
    outcome = await waiter.start(_ctx(rt, inst))
    assert outcome.status == "waiting" and outcome.check_in == timedelta(seconds=0.2)
    statuses = []
    for _ in range(3):
        outcome = await waiter.check(_ctx(rt, inst, data=dict(outcome.data)))
        statuses.append(outcome.status)
    assert statuses == ["waiting", "waiting", "done"]
    assert calls_for(rt).count("doc1:sign", kind="test-wait", op="check") == 3


async def test_instant_sets_configured_fields() -> None:
    rt = _Rt()
    inst = ConnectorInstance("i", "sae", "test", None, {"fields": {"numero_archive": "SAE-1"}})
    outcome = await InstantConnector(inst, rt).start(_ctx(rt, inst))
    assert outcome.status == "done" and outcome.fields == {"numero_archive": "SAE-1"}
    assert calls_for(rt).total() == 1


# ---- through the engine ----------------------------------------------------------------------

FLOW = """\
id: essai
label: "Essai"
fields:
  - {name: objet, type: text, label: "Objet", required: true}
  - {name: envoi_tdt, type: boolean, label: "TdT", default: true}
  - {name: numero_archive, type: text, label: "Numéro d'archive"}
  - {name: motif, type: text, label: "Motif"}
steps:
  - id: signature
    label: "Signature"
    family: signature
    connector: flaky
    retry: {attempts: 4, backoff: 1s, max_backoff: 1s}
    on: {rejected: {state: refuse}}
  - id: tdt
    label: "TdT"
    family: tdt-actes
    connector: waiter
    when: fields.envoi_tdt
    wait: {check_every: 1s}
  - {id: sae, label: "SAE", family: sae, connector: archive}
states:
  refuse: {label: "Refusé"}
"""


def _config(tmp_path: Path, connectors: str) -> Path:
    config = tmp_path / "config"
    (config / "flows").mkdir(parents=True)
    (config / "connectors").mkdir()
    (config / "flows" / "essai.yml").write_text(FLOW, encoding="utf-8")
    (config / "connectors" / "test.yml").write_text(textwrap.dedent(connectors), encoding="utf-8")
    return config


async def _start(rt: Any, fields: dict[str, Any]) -> Document:
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ent-essai", "Commune d'essai", None, None, now))
    doc = await documents.create_document(rt, entity_id="ent-essai", flow_id="essai", fields=fields, actor="test")
    await documents.run_action(rt, doc.id, "start", actor="test")
    return doc


async def test_engine_retries_waits_and_finishes(tmp_path: Path, runtime_factory: Any, wait_state: Any) -> None:
    log = tmp_path / "effects.log"
    config = _config(tmp_path, f"""\
        instances:
          - {{id: flaky, family: signature, kind: test-fail, settings: {{fail_times: 2, retry_in: 0.05}}}}
          - {{id: waiter, family: tdt-actes, kind: test-wait, settings: {{checks: 2, check_in: 0.05}}}}
          - {{id: archive, family: sae, kind: test, settings: {{fields: {{numero_archive: SAE-42}}, log_path: "{log}"}}}}
        """)
    rt = await runtime_factory("embedded", config_dir=config)
    doc = await _start(rt, {"objet": "Délibération d'essai"})
    done = await wait_state(rt, doc.id, ("done", "error"), timeout=30)
    assert done.state == "done", done.last_error
    assert done.fields["numero_archive"] == "SAE-42"
    calls = calls_for(rt)
    assert calls.count(f"{doc.id}:signature", kind="test-fail") == 3      # two failures, then done
    assert calls.count(f"{doc.id}:tdt", kind="test-wait") == 1            # one effect …
    assert calls.count(f"{doc.id}:tdt", kind="test-wait", op="check") == 2  # … and two checks
    assert count_in_log(log, f"{doc.id}:sae") == 1


async def test_engine_routes_a_rejection_to_the_named_state(tmp_path: Path, runtime_factory: Any,
                                                            wait_state: Any) -> None:
    config = _config(tmp_path, """\
        instances:
          - {id: flaky, family: signature, kind: test-reject, settings: {reason: "Refus du maire"}}
          - {id: waiter, family: tdt-actes, kind: test-wait, settings: {checks: 1}}
          - {id: archive, family: sae, kind: test, settings: {}}
        """)
    rt = await runtime_factory("embedded", config_dir=config)
    doc = await _start(rt, {"objet": "Arrêté", "envoi_tdt": False})
    refused = await wait_state(rt, doc.id, ("refuse", "done", "error"), timeout=30)
    assert refused.state == "refuse", refused.last_error
    assert refused.fields.get("rejection_reason") == "Refus du maire"
    assert calls_for(rt).count(doc.id, kind="test-wait", op=None) == 0


async def test_engine_skips_a_switched_off_step(tmp_path: Path, runtime_factory: Any, wait_state: Any) -> None:
    config = _config(tmp_path, """\
        instances:
          - {id: flaky, family: signature, kind: test, settings: {}}
          - {id: waiter, family: tdt-actes, kind: test-wait, settings: {checks: 1}}
          - {id: archive, family: sae, kind: test, settings: {}}
        """)
    rt = await runtime_factory("embedded", config_dir=config)
    doc = await _start(rt, {"objet": "Arrêté", "envoi_tdt": False})
    done = await wait_state(rt, doc.id, ("done", "error"), timeout=30)
    assert done.state == "done", done.last_error
    calls = calls_for(rt)
    assert calls.count(f"{doc.id}:signature") == 1 and calls.count(f"{doc.id}:sae") == 1
    assert calls.count(f"{doc.id}:tdt", op=None) == 0


async def test_fail_count_is_shared_through_the_effect_log(tmp_path: Path) -> None:
    """Two connector objects (as in two worker processes) see one count when they share a log."""
    log = tmp_path / "shared.log"
    inst = ConnectorInstance("flaky", "signature", "test-fail", None, {"fail_times": 1, "log_path": str(log)})
    first, second = FailNTimesConnector(inst, _Rt()), FailNTimesConnector(inst, _Rt())
    with pytest.raises(TransientError):
        await first.start(_ctx(first.runtime, inst, attempt=1))
    outcome = await second.start(_ctx(second.runtime, inst, attempt=2))
    assert outcome.status == "done"
    assert [e["key"] for e in read_effect_log(log)] == ["doc1:sign:1", "doc1:sign:2"]

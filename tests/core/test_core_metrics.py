"""/metrics after real flow runs: every declared series moves as it should (the counters are process-wide,
so the test reads them before and after), and the gauges read at scrape time show the queues and the
oldest document in error."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.flows.runner import QUEUE


async def _scrape(client) -> dict[tuple[str, tuple], float]:
    r = await client.get("/metrics")
    assert r.status == 200
    out = {}
    for family in text_string_to_metric_families(await r.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class _Later:
    """The runtime's clock moved forward (scrape time only)."""

    def __init__(self, clock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def now(self):
        from datetime import timedelta
        return self.clock.now() + timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.clock.monotonic()


def _get(values, name, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("backend", ["embedded", "scaleout"], indirect=True)
async def test_metrics_count_step_runs_http_requests_queues_and_oldest_error(backend, runtime_factory,
                                                                             engine_config, server_factory,
                                                                             wait_state):
    rt = await runtime_factory(backend, config_dir=engine_config)
    srv = await server_factory(rt)
    ent = await create_entity(rt, name="Commune Mesurée", siren=None, parent=None, actor_name="t")
    async with srv.client() as api:
        before = await _scrape(api)
        good = await documents.create_document(rt, entity_id=ent.id, flow_id="four", fields={"title": "ok"},
                                               actor="t")
        bad = await documents.create_document(rt, entity_id=ent.id, flow_id="broken", fields={"title": "ko"},
                                              actor="t")
        for doc in (good, bad):
            await documents.run_action(rt, doc.id, "start", actor="t")
        await wait_state(rt, good.id, "done", timeout=30)
        await wait_state(rt, bad.id, "error", timeout=30)
        for _ in range(3):
            assert (await api.get(f"/api/v1/documents/{good.id}")).status == 200
        assert (await api.get("/api/v1/documents/inconnu")).status == 404
        after = await _scrape(api)

    def delta(name, **labels):
        return _get(after, name, **labels) - _get(before, name, **labels)
    for step in ("one", "two", "three", "four"):
        assert delta("flowbus_step_runs_total", flow="four", step=step, outcome="done") == 1, step
    assert delta("flowbus_step_duration_seconds_count", flow="four", step="one") == 1
    assert delta("flowbus_step_runs_total", flow="broken", step="down", outcome="failed") == 2  # 2 attempts
    assert delta("flowbus_connector_errors_total", family="notify", kind="test-fail", nature="transient") == 2
    route = "/api/v1/documents/{id}"
    assert delta("flowbus_http_requests_total", method="GET", route=route, status="200") == 3
    assert delta("flowbus_http_requests_total", method="GET", route=route, status="404") == 1
    assert ("flowbus_oldest_document_age_seconds", (("flow", "broken"), ("state", "error"))) in after
    assert delta("flowbus_document_states_total", flow="four", state="done") == 1
    assert delta("flowbus_document_states_total", flow="broken", state="error") == 1
    assert _get(after, "flowbus_documents", flow="broken", state="error") == 1
    assert ("flowbus_documents", (("flow", "four"), ("state", "running"))) in after
    assert _get(after, "flowbus_documents", flow="four", state="running") == 0
    assert ("flowbus_documents", (("flow", "four"), ("state", "done"))) not in after, "finished: not counted"
    rt.clock = _Later(rt.clock, 3600)  # an hour later, the same document in error is an hour old
    async with srv.client() as api:
        aged = await _scrape(api)
    assert 3600 <= _get(aged, "flowbus_oldest_document_age_seconds", flow="broken", state="error") < 3700
    assert _get(aged, "flowbus_oldest_document_age_seconds", flow="four", state="error") == 0
    for status in ("ready", "delayed", "in_flight"):
        assert ("flowbus_queue_messages", (("queue", QUEUE), ("status", status))) in after, status
    assert ("flowbus_dead_letters", (("queue", QUEUE),)) in after

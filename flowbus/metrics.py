"""Every Prometheus metric, defined once, and where each is counted.

Counted as things happen: HTTP requests (``flowbus.api.http_metrics``), documents created and bytes
uploaded (API v1), step runs, their durations and connector errors, documents entering each state
(``flows.runner``, ``flows.fastrecord``).  Read when ``/metrics`` is scraped (``refresh``): queue depth by
status, dead letters, documents in each state that is not final per flow (counted up to ``COUNT_CAP``), age
of the oldest document waiting or in error per flow — each one index range, never a count of the documents
table (finished documents are followed by the rate of ``flowbus_document_states_total``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("flowbus_http_requests_total", "HTTP requests", ["method", "route", "status"])
DOCUMENTS_CREATED = Counter("flowbus_documents_created_total", "Documents created", ["flow"])
STEP_RUNS = Counter("flowbus_step_runs_total", "Step runs", ["flow", "step", "outcome"])
STEP_DURATION = Histogram("flowbus_step_duration_seconds", "Duration of one step run", ["flow", "step"])
CONNECTOR_ERRORS = Counter("flowbus_connector_errors_total", "Step runs that failed, by connector and nature "
                           "(transient: retried; permanent: the document goes to error)", ["family", "kind", "nature"])
BYTES_UPLOADED = Counter("flowbus_bytes_uploaded_total", "Bytes of files uploaded")
QUEUE_MESSAGES = Gauge("flowbus_queue_messages", "Messages per queue: ready, delayed, in_flight",
                       ["queue", "status"])
DEAD_LETTERS = Gauge("flowbus_dead_letters", "Dead letters per queue", ["queue"])
OLDEST_DOCUMENT = Gauge("flowbus_oldest_document_age_seconds",
                        "Age since the last change of the oldest document per flow and state (waiting, error)",
                        ["flow", "state"])
DOCUMENT_STATES = Counter("flowbus_document_states_total", "Documents entering a state (done, error, "
                          "a refusal…), per flow", ["flow", "state"])
DOCUMENTS = Gauge("flowbus_documents", "Documents now in each state that is not final, per flow (counted up to "
                  "100000)", ["flow", "state"])
WATCHED_STATES = ("waiting", "error", "running")
COUNTED_STATES = ("draft", "running", "waiting", "error")
COUNT_CAP = 100_000


def queues() -> dict[str, str]:
    """Every queue the platform's processes consume, with its French name (operations page, gauges)."""
    from flowbus import notifications
    from flowbus.connectors import webhooks
    from flowbus.connectors.inbound import rh
    from flowbus.flows import runner
    return {runner.QUEUE: "Étapes des documents", webhooks.QUEUE: "Webhooks", rh.QUEUE: "Lots RH",
            notifications.QUEUE: "Courriels de notification"}


async def refresh(rt: Any) -> None:
    """Set the gauges read at scrape time."""
    for stats in await rt.bus.queue_stats(list(queues())):
        QUEUE_MESSAGES.labels(stats.queue, "ready").set(stats.ready)
        QUEUE_MESSAGES.labels(stats.queue, "delayed").set(stats.delayed)
        QUEUE_MESSAGES.labels(stats.queue, "in_flight").set(stats.in_flight)
        DEAD_LETTERS.labels(stats.queue).set(stats.dead)
    from flowbus.clock import parse_iso
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        for flow_id in rt.flows:
            for state in WATCHED_STATES:  # index documents_flow_state_updated: one row each
                row = await tx.fetchrow("SELECT updated_at FROM documents WHERE flow_id = $1 AND state = $2 "
                                        "ORDER BY updated_at LIMIT 1", flow_id, state)
                age = (now - parse_iso(row["updated_at"])).total_seconds() if row else 0.0
                OLDEST_DOCUMENT.labels(flow_id, state).set(max(0.0, age))
            for state in COUNTED_STATES:  # the same index, a bounded range each
                count = await tx.fetchval("SELECT COUNT(*) FROM (SELECT 1 FROM documents WHERE flow_id = $1 AND "
                                          "state = $2 LIMIT $3) AS n", flow_id, state, COUNT_CAP)
                DOCUMENTS.labels(flow_id, state).set(count)

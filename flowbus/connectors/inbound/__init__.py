"""Inbound connectors: what business applications send (domain endpoints, Pastell API v2, glaneur).

``start_background(runtime)`` installs what must run in every process that runs workers: the
webhook hook on state changes and the consumers of queues ``webhooks`` and ``inbound-batches``.
The HTTP route modules also call it when the API starts (role ``all`` and ``api``); a
``worker``-only process must call it itself (``app.run_forever``).
"""

from __future__ import annotations

from typing import Any


def install_batch_worker(runtime: Any) -> Any:
    """The runtime's RH batch worker, created once."""
    from flowbus.connectors.inbound.rh import BatchWorker
    worker = getattr(runtime, "inbound_batches", None)
    if worker is None:
        worker = BatchWorker(runtime)
        runtime.inbound_batches = worker
        runtime.on_close(worker.stop)
    return worker


async def start_background(runtime: Any) -> None:
    """Webhook hook + consumers of ``webhooks``, ``inbound-batches`` and ``mails`` (idempotent)."""
    from flowbus.connectors import webhooks
    await webhooks.install(runtime).start()
    await install_batch_worker(runtime).start()
    from flowbus import notifications  # notification mails and the morning digest
    await notifications.install(runtime).start()

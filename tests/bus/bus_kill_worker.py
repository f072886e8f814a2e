"""A bus consumer in its own process, for the contract suite to kill with SIGKILL mid-batch.

Usage: python bus_kill_worker.py embedded <sqlite path | postgresql:// DSN> <queue> <effects file>
       python bus_kill_worker.py rabbitmq <amqp url> <prefix> <queue> <effects file>

The handler performs its effect (append the message key to the effects file, one write per
key) only if the key is not already there, then returns (→ ack).  From the ``HANG_AFTER``-th
effect on, handlers never return after their effect: the messages they hold are in flight (claimed,
not acked) whenever the test kills the process.  The process never exits by itself: the test
kills it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

HANG_AFTER = 3000


async def main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "embedded":
        from flowbus.bus.embedded import EmbeddedBus
        if argv[1].startswith("postgresql://"):
            from flowbus.store.postgres import PostgresStore
            store: Any = PostgresStore(argv[1])
        else:
            from flowbus.store.sqlite import SQLiteStore
            store = SQLiteStore(Path(argv[1]))
        await store.open()
        bus = EmbeddedBus(store, lease=timedelta(seconds=1))
        queue, effects = argv[2], Path(argv[3])
    else:
        from flowbus.bus.rabbitmq import RabbitMQBus
        bus = RabbitMQBus(argv[1], prefix=argv[2])
        queue, effects = argv[3], Path(argv[4])
    await bus.start()
    done = set(effects.read_text().split()) if effects.exists() else set()
    fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def handler(message):  # type: ignore[no-untyped-def]
        if message.key in done:
            return
        os.write(fd, f"{message.key}\n".encode())
        done.add(message.key)
        await asyncio.sleep(0.0005)  # some work
        if len(done) >= HANG_AFTER:
            await asyncio.Event().wait()  # in flight until the kill

    await bus.consume(queue, handler, prefetch=50)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

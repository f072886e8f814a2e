"""What ``flowbus serve`` does to memory once started: what start-up loaded is frozen out of the
garbage collector's full passes (they walked every XSD schema and module object, a pause of every
step in flight)."""

from __future__ import annotations

import asyncio
import gc

from flowbus.app import run_forever


async def test_serving_freezes_what_start_up_loaded(runtime_factory) -> None:
    rt = await runtime_factory("embedded", workers=False)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    task = asyncio.ensure_future(run_forever(rt, "worker"))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gc.get_freeze_count():
                break
        # the runtime's objects (its flows, say) are among those frozen: no longer in any generation
        assert gc.get_freeze_count() > 1000
        assert not any(obj is rt.flows for generation in range(3) for obj in gc.get_objects(generation))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.engine.stop()
        gc.unfreeze()

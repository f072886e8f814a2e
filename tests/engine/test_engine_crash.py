"""Crash tests: a worker SIGKILLed mid-step and restarted; RabbitMQ closing every connection mid-run.

Each document finishes and each step's outside effect happened exactly once: the test connector
writes one fsync'd line per effect (and a ``replay`` line when a redelivered call finds its
idempotency key already done, as a remote system deduplicating by key answers).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from flowbus import documents
from flowbus.api.entities import create_entity
from flowbus.connectors.testing import read_effect_log

STEPS = ("one", "two", "three", "four")


def crash_config(tmp_path: Path, log: Path, delay: float) -> Path:
    cfg = tmp_path / "crash-config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    (cfg / "connectors" / "c.yml").write_text(
        "instances:\n"
        f"  - {{id: effect, family: notify, kind: test, entity: null, settings: {{log_path: '{log}', delay: {delay}}}}}\n")
    steps = "\n".join(f"  - {{id: {s}, label: \"Étape {s}\", family: notify, connector: effect, "
                      f"retry: {{attempts: 5, backoff: 1s, max_backoff: 1s}}}}" for s in STEPS)
    (cfg / "flows" / "crashy.yml").write_text(textwrap.dedent("""\
        id: crashy
        label: "Flux de test de panne"
        description: "Quatre étapes à effet extérieur"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
        """) + steps + "\n")
    return cfg


def worker_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBUS_")}
    env.update({
        "FLOWBUS_DATA_DIR": str(settings.data_dir), "FLOWBUS_CONFIG_DIR": str(settings.config_dir), "FLOWBUS_DEMO": "true",
        "FLOWBUS_DATABASE_URL": settings.database_url, "FLOWBUS_BUS_URL": settings.bus_url,
        "FLOWBUS_BUS_PREFIX": settings.bus_prefix, "FLOWBUS_BLOB_BACKEND": settings.blob_backend,
        "FLOWBUS_S3_ENDPOINT": settings.s3_endpoint, "FLOWBUS_S3_ACCESS_KEY": settings.s3_access_key,
        "FLOWBUS_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(), "FLOWBUS_S3_BUCKET": settings.s3_bucket,
        "FLOWBUS_BUS_LEASE_SECONDS": str(settings.bus_lease_seconds), "FLOWBUS_LOG_LEVEL": "warning",
    })
    return env


def start_worker(settings, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flowbus", "serve", "--role", "worker"],
                            env=worker_env(settings), stdout=out.open("ab"), stderr=subprocess.STDOUT)


async def _start_documents(rt, n: int) -> list[str]:
    ent = await create_entity(rt, name="Commune en panne", siren=None, parent=None, actor_name="test")
    ids = []
    for i in range(n):
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="crashy", fields={"title": f"d{i}"},
                                              actor="test")
        await documents.run_action(rt, doc.id, "start", actor="test")
        ids.append(doc.id)
    return ids


def _assert_exactly_once(log: Path, ids: list[str]) -> Counter:
    entries = read_effect_log(log)
    effects = Counter(e["key"].rsplit(":", 1)[0] for e in entries if e["op"] == "start")
    expected = {f"{d}:{s}" for d in ids for s in STEPS}
    assert set(effects) == expected, "every step of every document had its effect"
    duplicated = {k: n for k, n in effects.items() if n != 1}
    assert not duplicated, f"effects repeated: {duplicated}"
    return Counter(e["op"] for e in entries)


async def _wait_all(rt, ids, wait_state, timeout=90):
    for doc_id in ids:
        await wait_state(rt, doc_id, "done", timeout=timeout)


async def _wait_effects(log: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(read_effect_log(log)) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} effects after {timeout}s")


@pytest.mark.slow
async def test_worker_killed_mid_step_then_restarted(backend, runtime_factory, tmp_path, wait_state):
    log = tmp_path / "effects.log"
    cfg = crash_config(tmp_path, log, delay=0.4)
    rt = await runtime_factory(backend, workers=False, config_dir=cfg, bus_lease_seconds=2)
    ids = await _start_documents(rt, 12)
    out = tmp_path / "worker.log"
    worker = start_worker(rt.settings, out)
    try:
        await _wait_effects(log, 10)
        worker.send_signal(signal.SIGKILL)  # in the middle of steps: effects done, outcomes not yet recorded
        worker.wait(10)
        killed_at = len(read_effect_log(log))
        assert killed_at < len(ids) * len(STEPS), "the worker was killed before the end of the run"
        worker = start_worker(rt.settings, out)
        await _wait_all(rt, ids, wait_state)
    finally:
        worker.kill()
        worker.wait(10)
    ops = _assert_exactly_once(log, ids)
    assert ops["start"] == len(ids) * len(STEPS)
    print(f"effects: {ops['start']}, replays after the crash: {ops['replay']}, killed after {killed_at}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scaleout"], indirect=True)
async def test_broker_closes_every_connection_mid_run(backend, runtime_factory, tmp_path, wait_state):
    log = tmp_path / "effects.log"
    cfg = crash_config(tmp_path, log, delay=0.2)
    rt = await runtime_factory(backend, config_dir=cfg)
    ids = await _start_documents(rt, 12)
    await _wait_effects(log, 8)
    proc = await asyncio.create_subprocess_exec("rabbitmqctl", "close_all_connections", "flowbus crash test",
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    await _wait_all(rt, ids, wait_state)
    _assert_exactly_once(log, ids)

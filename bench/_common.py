"""Helpers shared by the benchmarks: temporary runtimes on both backend sets, loopback servers."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("FLOWBUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("FLOWBUS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backends:
    """Creates runtimes for 'embedded' and 'scaleout' and cleans everything up."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="flowbus-bench-"))
        self.moto = None
        self.databases: list[str] = []
        self.runtimes: list[Any] = []

    async def runtime(self, kind: str, *, config_dir: Path | None = None, **overrides: Any) -> Any:
        from flowbus.app import build
        from flowbus.settings import Settings
        values: dict[str, Any] = {"data_dir": self.tmp / uuid.uuid4().hex[:8], "config_dir": config_dir or ROOT / "config",
                                  "log_level": "warning", "port": free_port()}
        if kind == "scaleout":
            import asyncpg
            name = f"flowbus_bench_{uuid.uuid4().hex[:10]}"
            conn = await asyncpg.connect(PG)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            self.databases.append(name)
            if self.moto is None:
                # moto in its own process, so its Python work does not share our GIL
                import subprocess
                import sys
                import time
                port = free_port()
                self.moto = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                              "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.moto_endpoint = f"127.0.0.1:{port}"
                for _ in range(100):
                    with socket.socket() as probe:
                        if probe.connect_ex(("127.0.0.1", port)) == 0:
                            break
                    time.sleep(0.1)
            values.update(database_url=PG.rsplit("/", 1)[0] + f"/{name}", bus_url=AMQP,
                          bus_prefix=f"bench{uuid.uuid4().hex[:8]}", blob_backend="s3",
                          s3_endpoint=self.moto_endpoint, s3_access_key="test", s3_secret_key="test",
                          s3_bucket=f"bench-{uuid.uuid4().hex[:8]}")
        values.update(overrides)
        rt = await build(Settings(_env_file=None, **values))
        self.runtimes.append(rt)
        return rt

    async def close(self) -> None:
        for rt in self.runtimes:
            await rt.close()
            purge = getattr(rt.bus, "delete_queues", None)
            if purge:
                try:
                    await purge()
                except Exception:  # noqa: BLE001
                    pass
        if self.databases:
            import asyncpg
            conn = await asyncpg.connect(PG)
            for name in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
        if self.moto is not None:
            self.moto.terminate()
            self.moto.wait(10)


def configure_quiet_logs() -> None:
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def run(coro: Any) -> Any:
    return asyncio.run(coro)

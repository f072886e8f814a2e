"""Folder pickup over SFTP, against an in-process asyncssh SFTP server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from flowbus.connectors.inbound.glaneur import GlaneurConfig
from flowbus.connectors.inbound.glaneur_sftp import SftpConfig, SftpGlaneur
from flowbus.errors import ConfigError, TransientError
from flowbus.models import Entity
from flowbus.store import repo
from tests.support.pdfs import pdf


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == "glaneur" and password == "s3cret-sftp"


@pytest.fixture
async def sftp_server(tmp_path: Path) -> Any:
    root = tmp_path / "remote"
    (root / "depot").mkdir(parents=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen("127.0.0.1", 0, server_factory=_Server, server_host_keys=[key],
                                   sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root)))
    port = server.sockets[0].getsockname()[1]
    yield root, port, key.export_public_key().decode()
    server.close()
    await server.wait_closed()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _age(path: Path) -> None:
    past = time.time() - 30
    os.utime(path, (past, past))


async def test_sftp_pickup_moves_remote_files(runtime_factory, sftp_server, tmp_path: Path) -> None:
    root, port, host_key = sftp_server
    rt = await runtime_factory("embedded", workers=False)
    async with rt.store.transaction() as tx:
        await repo.insert_entity(tx, Entity("ville", "Ville", None, None, rt.clock.now()))
    depot = root / "depot"
    for i in range(3):
        (depot / f"acte-{i}.pdf").write_bytes(pdf(f"acte {i}"))
        (depot / f"acte-{i}.json").write_text(json.dumps({"entity": "ville", "flow": "demo",
                                                          "fields": {"title": f"SFTP {i}"},
                                                          "files": {"file": f"acte-{i}.pdf"}}))
    (depot / "casse.json").write_text("{pas du json")
    (depot / "en-cours.json").write_text(json.dumps({"flow": "demo", "files": {"file": "en-cours.pdf"}}))
    for p in depot.iterdir():
        _age(p)
    (depot / "en-cours.pdf").write_bytes(pdf("still being written"))  # fresh: not settled yet
    sftp = SftpConfig("127.0.0.1", "glaneur", "depot", port=port, password="s3cret-sftp", host_key=host_key)
    assert "s3cret" not in repr(sftp)
    glaneur = SftpGlaneur(rt, GlaneurConfig(tmp_path / "staging", name="sftp", settle=5), sftp)
    report = await glaneur.scan_once()
    assert sorted(report.done) == ["acte-0.json", "acte-1.json", "acte-2.json"] and len(report.created) == 3
    assert list(report.failed) == ["casse.json"]
    assert sorted(p.name for p in (depot / "done").iterdir()) == sorted(
        [f"acte-{i}.{e}" for i in range(3) for e in ("json", "pdf")])
    assert sorted(p.name for p in (depot / "error").iterdir()) == ["casse.json", "casse.json.error.txt"]
    assert "JSON" in (depot / "error" / "casse.json.error.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in depot.iterdir() if p.is_file()) == ["en-cours.json", "en-cours.pdf"]
    # a second scan creates nothing more
    report = await glaneur.scan_once()
    assert report.created == [] and report.done == []
    async with rt.store.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM documents") == 3


async def test_sftp_needs_a_host_key_and_reports_a_wrong_password(runtime_factory, sftp_server, tmp_path) -> None:
    root, port, host_key = sftp_server
    rt = await runtime_factory("embedded", workers=False)
    with pytest.raises(ConfigError) as err:
        SftpGlaneur(rt, GlaneurConfig(tmp_path / "s"), SftpConfig("127.0.0.1", "glaneur", port=port, password="x"))
    assert err.value.field == "host_key"
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    for cfg, field in ((SftpConfig("127.0.0.1", "glaneur", "depot", port=port, password="faux", host_key=host_key),
                        "password"),
                       (SftpConfig("127.0.0.1", "glaneur", "depot", port=port, password="s3cret-sftp",
                                   host_key=other_key), "host_key")):
        with pytest.raises(ConfigError) as err:
            await SftpGlaneur(rt, GlaneurConfig(tmp_path / "s"), cfg).scan_once()
        assert err.value.field == field
    closed = SftpConfig("127.0.0.1", "glaneur", "depot", port=_free_port(), password="x", host_key=host_key)
    with pytest.raises(TransientError):
        await SftpGlaneur(rt, GlaneurConfig(tmp_path / "s"), closed).scan_once()

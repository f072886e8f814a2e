"""Folder pickup from an SFTP server: the remote directory is mirrored into a local staging directory
processed by ``Glaneur``, then the remote files are moved to the server's ``done/`` or ``error/``
(with the ``.error.txt`` uploaded beside them).

Exactly-once holds as for a local glaneur: units are recorded by name and SHA-256 before any
document is created, so a crash between the local processing and the remote move only makes
the next scan download the unit again, find it ``done`` and move it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import structlog

from flowbus.connectors.inbound.glaneur import Glaneur, GlaneurConfig, ScanReport
from flowbus.errors import ConfigError, TransientError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SftpConfig:
    host: str
    username: str
    directory: str = "."  # remote directory watched
    port: int = 22
    password: str | None = None
    client_key: str | None = None  # path of a private key file
    host_key: str | None = None  # the server's public key (OpenSSH format): required unless known_hosts
    known_hosts: str | None = None  # path of a known_hosts file

    def __repr__(self) -> str:  # never print the password
        return f"SftpConfig(host={self.host!r}, port={self.port}, username={self.username!r}, directory={self.directory!r})"


class SftpGlaneur(Glaneur):
    def __init__(self, runtime: Any, config: GlaneurConfig, sftp: SftpConfig) -> None:
        super().__init__(runtime, config)  # config.directory is the local staging directory
        if not sftp.host_key and not sftp.known_hosts:
            raise ConfigError("SFTP glaneur: the server's host key is required (host_key or known_hosts)",
                              field="host_key", hint="ssh-keyscan -t ed25519 <host> gives it")
        self.sftp = sftp

    def _connect_options(self) -> dict[str, Any]:
        s = self.sftp
        if s.host_key:
            known: Any = ([asyncssh.import_public_key(s.host_key)], [], [])
        else:
            known = s.known_hosts
        options: dict[str, Any] = {"port": s.port, "username": s.username, "known_hosts": known}
        if s.password is not None:
            options["password"] = s.password
        if s.client_key:
            options["client_keys"] = [s.client_key]
        else:
            options["client_keys"] = None
        return options

    async def scan_once(self) -> ScanReport:
        self.dir.mkdir(parents=True, exist_ok=True)
        remote = self.sftp.directory.rstrip("/") or "."
        try:
            async with asyncssh.connect(self.sftp.host, **self._connect_options()) as conn, \
                    conn.start_sftp_client() as client:
                fetched = await self._download(client, remote)
                report = await super().scan_once()
                await self._mirror(client, remote, fetched)
        except asyncssh.PermissionDenied as exc:
            raise ConfigError(f"SFTP server {self.sftp.host} refused the login {self.sftp.username!r}",
                              field="password", hint="check the SFTP login, password or key") from exc
        except asyncssh.HostKeyNotVerifiable as exc:
            raise ConfigError(f"SFTP server {self.sftp.host} presented a host key that is not the one configured",
                              field="host_key", hint="check the server's key (ssh-keyscan) before trusting it") from exc
        except (OSError, asyncssh.Error) as exc:
            raise TransientError(f"SFTP server {self.sftp.host}:{self.sftp.port} unreachable: {exc}") from exc
        return report

    async def _download(self, client: Any, remote: str) -> set[str]:
        names: set[str] = set()
        for entry in await client.readdir(remote):
            name = entry.filename
            attrs = entry.attrs
            if name.startswith(".") or attrs.permissions is None or not stat.S_ISREG(attrs.permissions):
                continue
            local = self.dir / name
            size, mtime = attrs.size or 0, attrs.mtime or 0
            if not (local.exists() and local.stat().st_size == size and int(local.stat().st_mtime) == mtime):
                tmp = self.dir / f".{name}.part"
                await client.get(f"{remote}/{name}", str(tmp))
                os.replace(tmp, local)
            os.utime(local, (mtime, mtime))  # settling is judged on the remote file's time
            names.add(name)
        return names

    async def _mirror(self, client: Any, remote: str, fetched: set[str]) -> None:
        for sub in ("done", "error"):
            local_dir = self.dir / sub
            if not local_dir.is_dir():
                continue
            for path in sorted(local_dir.iterdir()):
                original = _original_name(path.name, fetched)
                if original is None and not path.name.endswith(".error.txt"):
                    continue
                if not await client.isdir(f"{remote}/{sub}"):
                    await client.mkdir(f"{remote}/{sub}")
                target = f"{remote}/{sub}/{path.name}"
                if path.name.endswith(".error.txt"):
                    await client.put(str(path), target)
                else:
                    if await client.exists(target):
                        await client.remove(target)
                    if await client.exists(f"{remote}/{original}"):
                        await client.rename(f"{remote}/{original}", target)
                path.unlink()
                log.info("glaneur.sftp_moved", glaneur=self.config.name, file=path.name, to=sub)


def _original_name(local_name: str, fetched: set[str]) -> str | None:
    """The remote name of a processed file (a clash in done/ adds a timestamp: ``name.<stamp>.ext``)."""
    if local_name in fetched:
        return local_name
    for name in fetched:
        base = Path(name)
        if re.fullmatch(re.escape(base.stem) + r"\.\d{8}T\d{12}" + re.escape(base.suffix), local_name):
            return name
    return None

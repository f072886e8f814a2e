"""``flowbus glaneur``: watch a directory and turn dropped files into documents."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path


async def cmd_glaneur(args: argparse.Namespace) -> int:
    from flowbus import log as flog
    from flowbus.app import build
    from flowbus.connectors.inbound.glaneur import Glaneur, GlaneurConfig
    from flowbus.errors import FlowbusError
    from flowbus.settings import Settings
    settings = Settings()
    flog.configure(settings.log_format, settings.log_level)
    try:
        rt = await build(settings)
    except FlowbusError as exc:
        print(f"flowbus glaneur: refusing to start: {exc}", file=sys.stderr)
        return 1
    config = GlaneurConfig(Path(args.directory), name=args.name, entity=args.entity, flow=args.flow,
                           start=not args.no_start, settle=args.settle, interval=args.interval)
    try:
        glaneur = _sftp_glaneur(rt, config, args) if args.sftp else Glaneur(rt, config)
    except FlowbusError as exc:
        await rt.close()
        print(f"flowbus glaneur: {exc}", file=sys.stderr)
        return 2
    try:
        if args.once:
            report = await glaneur.scan_once()
            print(f"{len(report.done)} dépôt(s) traité(s), {len(report.created)} document(s) créé(s), "
                  f"{len(report.failed)} en erreur")
            for name, error in report.failed.items():
                print(f"  {name}: {error}")
            return 1 if report.failed else 0
        task = asyncio.ensure_future(glaneur.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        return 0
    finally:
        await rt.close()


def _sftp_glaneur(rt, config, args: argparse.Namespace):
    """``--sftp user@host[:port]/remote/dir``; the password comes from FLOWBUS_GLANEUR_SFTP_PASSWORD."""
    import os

    from flowbus.connectors.inbound.glaneur_sftp import SftpConfig, SftpGlaneur
    from flowbus.errors import ConfigError
    target = args.sftp
    user, _, rest = target.partition("@")
    hostport, _, remote = rest.partition("/")
    host, _, port = hostport.partition(":")
    if not user or not host:
        raise ConfigError(f"--sftp {target!r}: expected user@host[:port]/directory", field="sftp")
    sftp = SftpConfig(host, user, remote or ".", port=int(port or 22),
                      password=os.environ.get("FLOWBUS_GLANEUR_SFTP_PASSWORD"), client_key=args.sftp_key,
                      host_key=args.sftp_host_key, known_hosts=args.sftp_known_hosts)
    return SftpGlaneur(rt, config, sftp)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("glaneur", help="watch a directory: JSON sidecars or zips with manifest.json "
                                               "become documents (done/ and error/ beside them)")
    p.add_argument("directory", help="the directory to watch")
    p.add_argument("--name", default="glaneur", help="this glaneur's name (what it records per file)")
    p.add_argument("--entity", help="default entity id when the metadata names none")
    p.add_argument("--flow", help="default flow when the metadata names none")
    p.add_argument("--no-start", action="store_true", help="create drafts without starting them")
    p.add_argument("--settle", type=float, default=2.0, help="seconds a file must stay unchanged (default 2)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between scans (default 5)")
    p.add_argument("--sftp", help="watch user@host[:port]/directory over SFTP instead (DIRECTORY is then the local "
                                  "staging directory; password in FLOWBUS_GLANEUR_SFTP_PASSWORD)")
    p.add_argument("--sftp-key", help="private key file for the SFTP login")
    p.add_argument("--sftp-host-key", help="the SFTP server's public key (OpenSSH format)")
    p.add_argument("--sftp-known-hosts", help="a known_hosts file holding the SFTP server's key")
    p.add_argument("--once", action="store_true", help="scan once and exit (status 1 if a unit failed)")
    p.set_defaults(func=cmd_glaneur)

"""``flowbus backup DEST`` and ``flowbus restore SRC``: the embedded default, while the server runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_backup(args: argparse.Namespace) -> int:
    from flowbus import backup
    from flowbus.errors import FlowbusError
    from flowbus.settings import Settings
    try:
        report = backup.backup(Settings(), Path(args.dest))
    except FlowbusError as exc:
        print(f"flowbus backup : {exc.message}", file=sys.stderr)
        return 2
    print(f"Sauvegarde dans {args.dest} : {report.documents} documents, {report.files} fichiers "
          f"({report.copied} copiés, {report.bytes} octets). Elle contient la clé des secrets (secret.key) : "
          "gardez-la à l'abri.")
    return 0


async def cmd_restore(args: argparse.Namespace) -> int:
    from flowbus import backup, journal
    from flowbus.app import build
    from flowbus.errors import FlowbusError
    from flowbus.settings import Settings
    settings = Settings()
    try:
        report = backup.restore(settings, Path(args.source))
    except FlowbusError as exc:
        print(f"flowbus restore : {exc.message}", file=sys.stderr)
        return 2
    rt = await build(settings)  # migrations of this version run here
    try:
        async with rt.store.transaction() as tx:
            breaks = await journal.verify(tx)
    finally:
        await rt.close()
    print(f"Restauré dans {settings.data_dir} : {report.documents} documents, {report.files} fichiers ; "
          + ("journal intact." if not breaks else f"JOURNAL ROMPU : {len(breaks)} rupture(s)."))
    return 0 if not breaks else 1


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("backup", help="back up the embedded default (SQLite + files) while flowbus runs")
    b.add_argument("dest", help="backup folder (a second backup into it copies only the new files)")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="restore a backup into an empty FLOWBUS_DATA_DIR")
    r.add_argument("source", help="a folder written by flowbus backup")
    r.set_defaults(func=cmd_restore)

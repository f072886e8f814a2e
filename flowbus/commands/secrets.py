"""``flowbus secrets rotate``: every secret stored by the API (connector settings, webhook secrets, signers'
PKCS#12) sealed again with a new key (key file) or with the first of FLOWBUS_SECRET_KEYS."""

from __future__ import annotations

import argparse
import sys


async def cmd_rotate(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    from flowbus import secretbox
    from flowbus.app import make_store
    from flowbus.connectors.instances import InstanceRegistry
    from flowbus.connectors import webhooks
    from flowbus.errors import FlowbusError
    from flowbus.settings import Settings
    settings = Settings()
    from_env = bool(settings.secret_keys.get_secret_value().strip())
    try:
        old = secretbox.read_keys(settings)
    except FlowbusError as exc:
        print(f"flowbus secrets rotate: {exc.message}", file=sys.stderr)
        return 2
    new_key = None if from_env else Fernet.generate_key()
    box = secretbox.SecretBox(([new_key] if new_key else []) + old)
    path = secretbox.key_file(settings)
    if new_key:  # both keys on disk first: a crash midway still decrypts everything
        path.write_text("\n".join(k.decode("ascii") for k in [new_key, *old]) + "\n", encoding="ascii")
    store = make_store(settings)
    await store.open()
    try:
        registry = InstanceRegistry([])
        registry.box = box
        async with store.transaction() as tx:
            connectors = await registry.rotate_secrets(tx)
            hooks = await webhooks.rotate_secrets(tx, box)
            from flowbus.signature import parapheur
            signers = await parapheur.rotate_signer_keys(tx, box)
    finally:
        await store.close()
    if new_key:
        path.write_text(new_key.decode("ascii") + "\n", encoding="ascii")
        print(f"Nouvelle clé écrite dans {path} (l'ancienne est retirée).")
    else:
        print("Secrets chiffrés avec la première clé de FLOWBUS_SECRET_KEYS : retirez les autres clés de la "
              "variable, puis redémarrez flowbus.")
    print(f"{connectors} connecteur(s), {hooks} webhook(s) et {signers} certificat(s) de signataire rechiffrés.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    secrets = sub.add_parser("secrets", help="secrets at rest (connector passwords, webhook secrets)")
    actions = secrets.add_subparsers(dest="secrets_command", metavar="ACTION")
    rotate = actions.add_parser("rotate", help="seal every stored secret again with a new key")
    rotate.set_defaults(func=cmd_rotate)

"""``flowbus keys create|list|revoke``: API keys for the server's operator — the way back in when the last
administrator key is lost (whoever runs this on the server can read the database anyway)."""

from __future__ import annotations

import argparse
import json
import sys

from flowbus.commands.users import _runtime


def _roles(text: str) -> dict:
    """ENTITY=ROLE[,ENTITY=ROLE…] or JSON; '*' is every entity."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    roles = {}
    for part in text.split(","):
        entity, _, role = part.partition("=")
        if not entity or role not in ("reader", "editor", "admin"):
            raise argparse.ArgumentTypeError(f"{part!r}: ENTITY=reader|editor|admin attendu ('*' : toutes)")
        roles[entity.strip()] = role
    return roles


async def cmd_create(args: argparse.Namespace) -> int:
    from flowbus.api.auth import create_api_key
    from flowbus.errors import FlowbusError
    rt = await _runtime(args)
    try:
        key, secret = await create_api_key(rt, name=args.name, roles=args.roles, actor="flowbus-cli")
    except FlowbusError as exc:
        print(f"flowbus keys create : {exc.message}", file=sys.stderr)
        return 2
    finally:
        await rt.close()
    print(f"Clé « {key.name} » ({key.id}) créée ; voici son secret, affiché une seule fois :")
    print(secret)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    from flowbus.store import repo
    rt = await _runtime(args)
    try:
        async with rt.store.transaction() as tx:
            keys = await repo.list_api_keys(tx)
    finally:
        await rt.close()
    for k in keys:
        state = "révoquée" if k.revoked_at else "active"
        print(f"{k.id}  {state:9s}  {k.name}  {json.dumps(k.roles, ensure_ascii=False)}")
    return 0


async def cmd_revoke(args: argparse.Namespace) -> int:
    from flowbus.errors import FlowbusError
    from flowbus.people import audit
    from flowbus.store import repo
    rt = await _runtime(args)
    try:
        async with rt.store.transaction() as tx:
            key = await repo.get_api_key(tx, args.key_id)
            await repo.revoke_api_key(tx, key.id, rt.clock.now())
            await audit.record(tx, actor="flowbus-cli", kind="admin.key.revoked", at=rt.clock.now(), key=key.id,
                               name=key.name, before={"roles": key.roles})
    except FlowbusError as exc:
        print(f"flowbus keys revoke : {exc.message}", file=sys.stderr)
        return 2
    finally:
        await rt.close()
    print(f"Clé « {key.name} » ({key.id}) révoquée.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="API keys (operator's way back in)").add_subparsers(dest="keys_command",
                                                                                        metavar="ACTION")
    p = k.add_parser("create", help="create a key and print its secret once")
    p.add_argument("--name", required=True)
    p.add_argument("--roles", type=_roles, default={"*": "admin"},
                   help="ENTITY=ROLE[,ENTITY=ROLE] ('*' = every entity; default: platform administrator)")
    p.set_defaults(func=cmd_create)
    p = k.add_parser("list", help="every key, active or revoked")
    p.set_defaults(func=cmd_list)
    p = k.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_revoke)

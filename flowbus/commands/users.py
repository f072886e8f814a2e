"""flowbus users create, reset-password, deactivate, list: people's accounts, for the server's operator."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flowbus.commands.core import _settings


async def _runtime(args: argparse.Namespace) -> Any:
    from flowbus import log as flog
    from flowbus.app import build
    settings = _settings(args)
    flog.configure(settings.log_format, settings.log_level)
    return await build(settings)


def _grant(text: str) -> Any:
    """ENTITY=ROLE[:flow,flow] (ENTITY an entity id or '*')."""
    from flowbus.people.access import Grant
    entity, _, rest = text.partition("=")
    role, _, flows = rest.partition(":")
    if not entity or role not in ("reader", "editor", "admin"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ENTITY=reader|editor|admin[:flow,flow]")
    return Grant(entity, role, tuple(f for f in flows.split(",") if f) or None)


async def cmd_create(args: argparse.Namespace) -> int:
    from flowbus.errors import FlowbusError
    from flowbus.people import accounts, links
    from flowbus.people.access import EVERY_ENTITY, Grant
    rt = await _runtime(args)
    try:
        now = rt.clock.now()
        grants = list(args.grant or [])
        if args.platform_admin:
            grants.append(Grant(EVERY_ENTITY, "admin"))
        async with rt.store.transaction() as tx:
            user = await accounts.create(tx, login=args.login, name=args.name, email=args.email,
                                         actor="flowbus-cli", now=now)
            for g in grants:
                await accounts.grant(tx, user, g, actor="flowbus-cli", now=now)
            token = await links.issue(tx, user.id, "first", now)
    except FlowbusError as exc:
        print(f"flowbus users create: {exc}", file=sys.stderr)
        return 1
    finally:
        await rt.close()
    print(f"Account {user.login} created. One-time sign-in link (valid 24 h):")
    print(links.url(rt.settings.base_url, token))
    return 0


async def cmd_reset(args: argparse.Namespace) -> int:
    from flowbus.people import accounts, links
    rt = await _runtime(args)
    try:
        async with rt.store.transaction() as tx:
            user = await accounts.by_login(tx, args.login)
            if user is None:
                print(f"flowbus users reset-password: no account {args.login!r}", file=sys.stderr)
                return 1
            token = await links.issue(tx, user.id, "first", rt.clock.now())
            await tx.execute("UPDATE users SET failed_sign_ins = 0, locked_until = NULL WHERE id = $1", user.id)
    finally:
        await rt.close()
    print(f"One-time link for {user.login} to choose a new password (valid 24 h):")
    print(links.url(rt.settings.base_url, token))
    return 0


async def cmd_deactivate(args: argparse.Namespace) -> int:
    from flowbus.people import accounts
    rt = await _runtime(args)
    try:
        async with rt.store.transaction() as tx:
            user = await accounts.by_login(tx, args.login)
            if user is None:
                print(f"flowbus users deactivate: no account {args.login!r}", file=sys.stderr)
                return 1
            await accounts.set_active(tx, user, False, actor="flowbus-cli", now=rt.clock.now())
    finally:
        await rt.close()
    print(f"Account {user.login} deactivated; its sessions have ended.")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    from flowbus.people import accounts
    rt = await _runtime(args)
    try:
        after = None
        async with rt.store.transaction() as tx:
            while True:
                batch = await accounts.page(tx, after=after, limit=500)
                for u in batch:
                    grants = ", ".join(f"{g.entity_id}={g.role}" + (f":{','.join(g.flows)}" if g.flows else "")
                                       for g in await accounts.grants_of(tx, u.id))
                    print(f"{u.login}\t{u.name}\t{u.email}\t{'active' if u.active else 'inactive'}\t{grants}")
                if len(batch) < 500:
                    break
                after = (batch[-1].name, batch[-1].id)
    finally:
        await rt.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("users", help="people's accounts").add_subparsers(dest="users_command", metavar="ACTION")
    p = u.add_parser("create", help="create an account and print its one-time sign-in link")
    p.add_argument("login")
    p.add_argument("--name", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--platform-admin", action="store_true", help="administrator of the whole platform")
    p.add_argument("--grant", action="append", type=_grant, metavar="ENTITY=ROLE[:flow,flow]",
                   help="a role on an entity and its sub-entities, optionally on some flows only (repeatable)")
    p.set_defaults(func=cmd_create)
    p = u.add_parser("reset-password", help="print a one-time link to choose a new password (unlocks the account)")
    p.add_argument("login")
    p.set_defaults(func=cmd_reset)
    p = u.add_parser("deactivate", help="deactivate an account and end its sessions")
    p.add_argument("login")
    p.set_defaults(func=cmd_deactivate)
    p = u.add_parser("list", help="every account with its grants")
    p.set_defaults(func=cmd_list)

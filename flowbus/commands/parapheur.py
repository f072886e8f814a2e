"""``flowbus parapheur …``: set up the built-in parapheur (desks, signers, circuits, delegations)."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time
from typing import Any

from flowbus.clock import SystemClock
from flowbus.errors import FlowbusError, ValidationError
from flowbus.settings import Settings
from flowbus.signature import parapheur

PASSWORD_ENV = "FLOWBUS_SIGNER_PASSWORD"


@asynccontextmanager
async def _tx() -> AsyncIterator[Any]:
    from flowbus.app import make_store
    store = make_store(Settings())
    await store.open()
    try:
        await store.migrate()
        async with store.transaction() as tx:
            yield tx
    finally:
        await store.close()


def _step(text: str) -> dict[str, Any]:
    """``visa:<desk id>``, ``signature:<desk id>`` or ``external:<name>[:<email>]``."""
    kind, _, rest = text.partition(":")
    if kind == "external":
        name, _, email = rest.partition(":")
        return {"kind": kind, "name": name, "email": email or None}
    return {"kind": kind, "desk": rest}


def _day(text: str, end: bool) -> datetime:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ValidationError(f"bad date {text!r}: expected YYYY-MM-DD", field="end" if end else "start") from None
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)


async def cmd_desk_add(args: argparse.Namespace) -> int:
    async with _tx() as tx:
        desk = await parapheur.create_desk(tx, entity_id=args.entity, name=args.name, now=SystemClock().now())
    print(f"desk {desk.id} « {desk.name} » created for entity {desk.entity_id}")
    return 0


async def cmd_signer_add(args: argparse.Namespace) -> int:
    password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {args.login}: ")
    async with _tx() as tx:
        signer = await parapheur.create_signer(tx, entity_id=args.entity, login=args.login, name=args.name,
                                               password=password, email=args.email, now=SystemClock().now())
        for desk in args.desk or []:
            await parapheur.add_member(tx, desk, signer.id)
    print(f"signer {signer.login} ({signer.name}) created; desks: {', '.join(args.desk or []) or 'none'}")
    return 0


async def cmd_circuit_add(args: argparse.Namespace) -> int:
    async with _tx() as tx:
        circuit = await parapheur.create_circuit(tx, entity_id=args.entity, name=args.name,
                                                 steps=[_step(s) for s in args.step], now=SystemClock().now())
    print(f"circuit « {circuit.name} » created: " + " → ".join(s.label for s in circuit.steps))
    return 0


async def cmd_delegate(args: argparse.Namespace) -> int:
    async with _tx() as tx:
        d = await parapheur.add_delegation(tx, from_desk=args.from_desk, to_desk=args.to_desk,
                                           starts_at=_day(args.start, False), ends_at=_day(args.end, True),
                                           created_by=f"cli:{getpass.getuser()}", now=SystemClock().now())
    print(f"delegation {d.id}: desk {d.from_desk} → desk {d.to_desk} from {args.start} to {args.end}")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    async with _tx() as tx:
        for desk in await parapheur.list_desks(tx, args.entity):
            names = ", ".join(f"{s.name} ({s.login})" for s in await parapheur.members(tx, desk.id))
            print(f"desk {desk.id}  {desk.name}: {names or 'no member'}")
            for d in await parapheur.delegations_from(tx, desk.id):
                print(f"    delegated to {d.to_desk} from {d.starts_at:%Y-%m-%d} to {d.ends_at:%Y-%m-%d}")
        rows = await tx.fetch("SELECT name FROM parapheur_circuits WHERE entity_id = $1 ORDER BY name", args.entity)
        for row in rows:
            circuit = await parapheur.get_circuit(tx, args.entity, row["name"])
            print(f"circuit « {circuit.name} »: " + " → ".join(s.label for s in circuit.steps))
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from flowbus.app import build
    from flowbus.signature.parapheur_demo import seed_commune
    rt = await build(Settings())
    try:
        c = await seed_commune(rt, args.name)
    finally:
        await rt.close()
    print(f"entity {c['entity'].id} « {c['entity'].name} »")
    for role in ("dgs", "maire", "adjoint"):
        print(f"  signer {c[role].login} / {role}-motdepasse  (desk {c['desk_' + role].name})")
    return 0


def _run(func: Any) -> Any:
    async def wrapper(args: argparse.Namespace) -> int:
        try:
            return await func(args)
        except FlowbusError as exc:
            print(f"error: {exc}" + (f" [field {exc.field}]" if exc.field else ""))
            return 1
    return wrapper


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parapheur", help="built-in parapheur: desks, signers, circuits, delegations")
    s = p.add_subparsers(dest="parapheur_command", metavar="ACTION", required=True)
    a = s.add_parser("desk-add", help="create a desk (a role within an entity)")
    a.add_argument("--entity", required=True)
    a.add_argument("--name", required=True)
    a.set_defaults(func=_run(cmd_desk_add))
    a = s.add_parser("signer-add", help=f"create a signer (password from ${PASSWORD_ENV} or asked)")
    a.add_argument("--entity", required=True)
    a.add_argument("--login", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--email")
    a.add_argument("--desk", action="append", help="desk id the signer belongs to (repeatable)")
    a.set_defaults(func=_run(cmd_signer_add))
    a = s.add_parser("circuit-add", help="create a circuit: --step visa:<desk> --step signature:<desk> "
                                         "--step external:<name>[:<email>]")
    a.add_argument("--entity", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--step", action="append", required=True)
    a.set_defaults(func=_run(cmd_circuit_add))
    a = s.add_parser("delegate", help="let another desk act for a desk during a period (dates inclusive)")
    a.add_argument("--from", dest="from_desk", required=True)
    a.add_argument("--to", dest="to_desk", required=True)
    a.add_argument("--start", required=True, help="YYYY-MM-DD")
    a.add_argument("--end", required=True, help="YYYY-MM-DD")
    a.set_defaults(func=_run(cmd_delegate))
    a = s.add_parser("list", help="desks, members, delegations and circuits of an entity")
    a.add_argument("--entity", required=True)
    a.set_defaults(func=_run(cmd_list))
    a = s.add_parser("demo", help="create a demo commune with three desks, signers and circuits")
    a.add_argument("--name", default="Commune de Démo")
    a.set_defaults(func=_run(cmd_demo))

"""Command line: argument parsing only.  Each feature module contributes its subcommands.

A feature module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its parsers and sets ``func`` (a callable taking the parsed args and returning an exit code;
a coroutine function is run with asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys

import pydantic

# Explicit list: no import-time registration.  Keep it sorted by command name.
COMMAND_MODULES = [
    "flowbus.commands.core",  # serve, init, doctor, journal verify
    "flowbus.commands.backup",  # backup, restore
    "flowbus.commands.flows",  # flows validate|graph
    "flowbus.commands.signature",  # sign, verify
    "flowbus.commands.tdt",  # pes inspect, actes …
    "flowbus.commands.archive",  # archive verify|build
    "flowbus.commands.glaneur",  # glaneur <directory>: folder pickup
    "flowbus.commands.keys",  # keys create|list|revoke
    "flowbus.commands.parapheur",  # parapheur desk-add|signer-add|circuit-add|delegate|list|demo
    "flowbus.commands.secrets",  # secrets rotate
    "flowbus.commands.users",  # users create|reset-password|deactivate|list
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowbus", description="flowbus: routage de documents pour les collectivités")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # feature not installed in this tree yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        if inspect.iscoroutinefunction(func):
            code = asyncio.run(func(args))
        else:
            code = func(args)
    except KeyboardInterrupt:
        return 130
    except pydantic.ValidationError as exc:  # a FLOWBUS_* setting that cannot be right: say which, and stop
        for error in exc.errors():
            field = "FLOWBUS_" + str(error["loc"][0]).upper() if error.get("loc") else "FLOWBUS_*"
            print(f"flowbus: réglage invalide {field} : {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

"""``flowbus flows validate PATH...``, ``flowbus flows graph FLOW_OR_PATH`` and ``flowbus flows reload``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowbus.errors import ConfigError, FlowDefinitionError, InvalidFlows


def register(subparsers: argparse._SubParsersAction) -> None:
    flows = subparsers.add_parser("flows", help="check and draw flow definitions")
    sub = flows.add_subparsers(dest="flows_command", metavar="SUBCOMMAND")
    flows.set_defaults(func=lambda args: (flows.print_help(), 2)[1])

    validate = sub.add_parser("validate", help="check flow files; one line per error, exit 1 on any error")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="flow files or directories of them")
    validate.add_argument("--connectors", type=Path, default=None, metavar="DIR",
                          help="connector instance files to check step connectors against "
                               "(default: <config dir>/connectors; skipped when it declares no instance)")
    validate.set_defaults(func=cmd_validate)

    graph = sub.add_parser("graph", help="print a flow as a Mermaid flowchart")
    graph.add_argument("flow", metavar="FLOW_OR_PATH", help="a flow id from the config directory, or a flow file")
    graph.set_defaults(func=cmd_graph)

    reload = sub.add_parser("reload", help="read config/flows again in every running process (within 10 s), "
                                           "without restart; exit 1 if a file is refused")
    reload.set_defaults(func=cmd_reload)


async def cmd_reload(args: argparse.Namespace) -> int:
    """Record the new flow versions and number a reload: every running process follows at its next look."""
    from flowbus.app import build
    from flowbus.settings import Settings
    rt = await build(Settings(), with_flows=False)
    try:
        loaded = await rt.reload_flows(actor="flowbus flows reload")
    finally:
        await rt.close()
    for flow_id, flow in sorted(loaded.flows.items()):
        new = " (nouvelle version)" if (flow_id, flow.version) in loaded.new_versions else ""
        print(f"[ok] {flow_id} : version {flow.version}{new}")
    for problem in loaded.problems:
        print(f"[KO] {problem.summary()}")
        for err in problem.errors:
            print(f"     {_line(err)}")
    print("Les processus en marche appliquent ce rechargement dans les 10 secondes.")
    return 1 if loaded.problems else 0


def _flow_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.yml")) + sorted(path.glob("*.yaml"))
            if not found:
                problems.append(f"{path}: no .yml flow file in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or directory")
    return files, problems


def _config_dir() -> Path:
    try:
        from flowbus.settings import Settings
        return Settings().config_dir
    except Exception:  # noqa: BLE001 - a broken environment must not hide flow errors
        return Path("config")


def _instance_ids(directory: Path) -> tuple[set[str] | None, list[str]]:
    from flowbus.connectors.instances import load_yaml_instances
    try:
        ids = {inst.id for inst in load_yaml_instances(directory)}
    except ConfigError as exc:
        return None, [f"{exc}"]
    return (ids or None), []


def cmd_validate(args: argparse.Namespace) -> int:
    from flowbus.connectors.registry import FAMILIES
    from flowbus.flows.loader import load_flows
    from flowbus.flows.validate import validate_flow

    files, problems = _flow_files(args.paths)
    connectors_dir = args.connectors or (_config_dir() / "connectors")
    instances, instance_problems = _instance_ids(connectors_dir)
    problems.extend(instance_problems)
    flows, errors = load_flows(files, keep_invalid=True)
    for flow in flows.values():
        errors.extend(validate_flow(flow, families=FAMILIES, instances=instances))
    errors.sort(key=_order)
    for line in problems:
        print(line)
    for err in errors:
        print(_line(err))
    if errors or problems:
        count = len(errors) + len(problems)
        print(f"{count} error{'s' if count > 1 else ''} in {len(files)} file{'s' if len(files) > 1 else ''}",
              file=sys.stderr)
        return 1
    checked = "" if instances is None else f", connector instances from {connectors_dir}"
    print(f"OK: {len(flows)} flow{'s' if len(flows) != 1 else ''} valid ({', '.join(sorted(flows))}){checked}")
    return 0


def _order(err: FlowDefinitionError) -> tuple[str, int, int]:
    p = err.position
    return (p.file, p.line, p.column) if p else ("", 0, 0)


def _line(err: FlowDefinitionError) -> str:
    where = f"{err.position}: " if err.position else ""
    text = f"{where}{err.message}"
    if err.hint:
        text += f" — {err.hint}"
    return text


def cmd_graph(args: argparse.Namespace) -> int:
    from flowbus.flows.graph import to_mermaid
    from flowbus.flows.loader import load_flow, load_flows

    path = Path(args.flow)
    try:
        if path.is_file():
            flow = load_flow(path)
        else:
            flows_dir = _config_dir() / "flows"
            flows, errors = load_flows(sorted(flows_dir.glob("*.yml")) + sorted(flows_dir.glob("*.yaml")))
            if args.flow not in flows:
                from flowbus.flows.validate import hint_for
                known = hint_for(args.flow, flows, "known flows")
                bad = f" ({len(errors)} flow file error(s): run flowbus flows validate)" if errors else ""
                print(f"{args.flow}: no such flow file nor flow id in {flows_dir} — {known}{bad}", file=sys.stderr)
                return 1
            flow = flows[args.flow]
    except InvalidFlows as exc:
        for err in exc.errors:
            print(_line(err), file=sys.stderr)
        return 1
    sys.stdout.write(to_mermaid(flow))
    return 0

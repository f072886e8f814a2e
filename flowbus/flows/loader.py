"""YAML → flow model, every node keeping its source position (file, 1-based line and column).

The file is read with ``yaml.compose()`` rather than ``safe_load``: nodes carry their
``start_mark``, so every error names the line and column of the offending key or value.
Mapping keys are kept as written (PyYAML would turn a bare ``on:`` key into ``True``).
Errors are collected, not raised one by one: ``load_flows`` returns them all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from flowbus.errors import FlowDefinitionError, InvalidFlows, SourcePosition
from flowbus.flows import expr as expr_mod
from flowbus.flows.model import (
    BUILTIN_STATES,
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_CHECK_EVERY,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_REJECTED_STATE,
    DEFAULT_TIMEOUT,
    FILE_TYPES,
    FieldDef,
    Flow,
    RetryPolicy,
    StateDef,
    Step,
    Target,
    WaitPolicy,
)
from flowbus.flows.validate import Positions, shape_errors

_DURATION_RE = re.compile(r"^(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> dt.timedelta:
    """``30s``, ``15m``, ``2h``, ``10d`` or combined (``1h30m``) → timedelta; ValueError otherwise."""
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"bad duration {text!r}")
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)


def format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


# ---- YAML nodes → plain data + positions --------------------------------------------------------

class _Constructor(SafeConstructor):
    pass


def _position(file: str, node: yaml.Node) -> SourcePosition:
    return SourcePosition(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _to_data(node: yaml.Node, path: tuple, pos: Positions, errors: list[FlowDefinitionError]) -> Any:
    pos.values[path] = _position(pos.file, node)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                errors.append(FlowDefinitionError("a key must be plain text", position=_position(pos.file, key_node)))
                continue
            key = key_node.value
            if key in out:
                errors.append(FlowDefinitionError(f'duplicate key "{key}"', position=_position(pos.file, key_node),
                                                  hint="each key appears once in a mapping"))
                continue
            pos.keys[path + (key,)] = _position(pos.file, key_node)
            out[key] = _to_data(value_node, path + (key,), pos, errors)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, path + (i,), pos, errors) for i, item in enumerate(node.value)]
    pos.quoted[path] = node.style in ("'", '"')
    value = _Constructor().construct_object(node, deep=True)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def read_yaml(path: Path) -> tuple[Any, Positions, list[FlowDefinitionError]]:
    """Parse one file into plain data and positions; syntax errors come back as FlowDefinitionErrors."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, Positions(file), [FlowDefinitionError(f"cannot read the flow file: {exc}",
                                                           position=SourcePosition(file, 1, 1))]
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str) -> tuple[Any, Positions, list[FlowDefinitionError]]:
    """Parse a flow's text (read from ``file``) into plain data and positions."""
    pos = Positions(file)
    errors: list[FlowDefinitionError] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = SourcePosition(file, mark.line + 1, mark.column + 1) if mark else SourcePosition(file, 1, 1)
        return None, pos, [FlowDefinitionError(f"YAML syntax error: {exc.problem or exc}", position=where,
                                               hint=exc.context)]
    if node is None:
        return None, pos, [FlowDefinitionError("the flow file is empty", position=SourcePosition(file, 1, 1))]
    data = _to_data(node, (), pos, errors)
    return data, pos, errors


# ---- plain data → model --------------------------------------------------------------------------

class _Builder:
    def __init__(self, data: dict[str, Any], pos: Positions) -> None:
        self.data = data
        self.pos = pos
        self.errors: list[FlowDefinitionError] = []

    def error(self, message: str, path: tuple, *, key: bool = False, hint: str | None = None) -> None:
        position = self.pos.key(path) if key else self.pos.value(path)
        self.errors.append(FlowDefinitionError(message, position=position, hint=hint))

    def duration(self, value: Any, path: tuple, default: dt.timedelta | None, what: str) -> dt.timedelta | None:
        if value is None:
            return default
        try:
            result = parse_duration(value)
        except ValueError:
            return default  # the schema reports the bad duration
        if result <= dt.timedelta(0):
            self.error(f"{what}: a duration must be longer than 0s", path)
            return default
        return result

    def build(self) -> Flow:
        d = self.data
        fields = self.fields(d.get("fields") or [])
        states = self.states(d.get("states") or {})
        steps = self.steps(d.get("steps") or [])
        start = d.get("start") if isinstance(d.get("start"), str) else (steps[0].id if steps else None)
        where = {k: p for k in ("id", "label", "start", "steps", "fields", "states") if (p := self.pos.values.get((k,)))}
        return Flow(id=str(d.get("id", "")), label=str(d.get("label", "")),
                    description=str(d.get("description") or ""), fields=fields, steps=steps, start=start,
                    states=states, source=self.pos.file, position=self.pos.values.get(()), where=where,
                    columns=self.columns(d.get("columns") or [], {f.name for f in fields}))

    def columns(self, items: Any, names: set[str]) -> tuple[str, ...]:
        out: list[str] = []
        for i, name in enumerate(items if isinstance(items, list) else []):
            if not isinstance(name, str):
                continue  # the schema reports it
            if name not in names:
                self.error(f'columns: unknown field "{name}"', ("columns", i),
                           hint=f"fields: {', '.join(sorted(names)) or '(none)'}")
                continue
            out.append(name)
        return tuple(out)

    # fields ------------------------------------------------------------------------------------

    def fields(self, items: Any) -> tuple[FieldDef, ...]:
        out: list[FieldDef] = []
        seen: dict[str, int] = {}
        if not isinstance(items, list):
            return ()
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                continue
            path = ("fields", i)
            name = item["name"]
            if name in seen:
                first = self.pos.value(("fields", seen[name], "name"))
                self.error(f'duplicate field "{name}"', path + ("name",),
                           hint=f"already declared at line {first.line}" if first else None)
                continue
            seen[name] = i
            out.append(self.field(item, path))
        return tuple(out)

    def field(self, item: Mapping[str, Any], path: tuple) -> FieldDef:
        name, ftype = item["name"], item.get("type")
        where = f'field "{name}"'
        only = {"pattern": ("text",), "max_length": ("text",), "choices": ("choice",), "max_size": FILE_TYPES,
                "media_types": FILE_TYPES, "content": FILE_TYPES}
        for key, types in only.items():
            if key in item and ftype in ("text", "date", "number", "boolean", "choice", "email", "file", "files") \
                    and ftype not in types:
                self.error(f'{where}: "{key}" applies to {" and ".join(types)} fields, not {ftype}',
                           path + (key,), key=True)
        pattern = item.get("pattern")
        if isinstance(pattern, str) and ftype == "text":
            try:
                re.compile(pattern)
            except re.error as exc:
                col_shift = (exc.pos or 0) + (1 if self.pos.quoted.get(path + ("pattern",)) else 0)
                p = self.pos.value(path + ("pattern",))
                self.errors.append(FlowDefinitionError(
                    f"{where}: bad regular expression in pattern: {exc.msg}",
                    position=SourcePosition(p.file, p.line, p.column + col_shift) if p else None,
                    hint="patterns are Python regular expressions matched against the whole value"))
                pattern = None
        choices = item.get("choices")
        if ftype == "choice" and not isinstance(choices, Mapping):
            if "choices" not in item:
                self.error(f'{where}: a choice field needs "choices" (value: label)', path + ("type",))
            choices = None
        if isinstance(choices, Mapping):
            choices = {str(k): str(v) for k, v in choices.items()}
        default = item.get("default")
        if default is not None and isinstance(ftype, str):
            default = self.default(name, ftype, default, choices, item, path)
        media = item.get("media_types")
        return FieldDef(name=name, type=str(ftype), label=str(item.get("label", name)),
                        required=bool(item.get("required", False)), pattern=pattern if ftype == "text" else None,
                        max_length=item.get("max_length") if isinstance(item.get("max_length"), int) else None,
                        choices=choices if ftype == "choice" else None, default=default,
                        max_size=item.get("max_size") if isinstance(item.get("max_size"), int) else None,
                        media_types=tuple(media) if isinstance(media, list) else None,
                        content=item.get("content") if isinstance(item.get("content"), str) else None,
                        produced=item.get("produced") is True, position=self.pos.value(path))

    def default(self, name: str, ftype: str, value: Any, choices: Mapping[str, str] | None,
                item: Mapping[str, Any], path: tuple) -> Any:
        from flowbus.errors import ValidationError
        from flowbus.flows.fields import normalize_value
        if ftype in FILE_TYPES:
            self.error(f'field "{name}": a file field cannot have a default', path + ("default",), key=True)
            return None
        probe = FieldDef(name=name, type=ftype, label="", pattern=item.get("pattern") if ftype == "text" else None,
                         max_length=item.get("max_length") if isinstance(item.get("max_length"), int) else None,
                         choices=choices)
        try:
            return normalize_value(probe, value)
        except (ValidationError, re.error) as exc:
            self.error(f'field "{name}": bad default: {getattr(exc, "message", exc)}', path + ("default",))
            return None

    # states ------------------------------------------------------------------------------------

    def states(self, items: Any) -> dict[str, StateDef]:
        out = {DEFAULT_REJECTED_STATE: StateDef(DEFAULT_REJECTED_STATE, "Refusé", True, None)}
        if not isinstance(items, Mapping):
            return out
        for name, spec in items.items():
            path = ("states", name)
            if name in BUILTIN_STATES:
                self.error(f'state "{name}" is built in and cannot be declared', path, key=True,
                           hint=f"built-in states: {', '.join(BUILTIN_STATES)}; choose another name")
                continue
            if not isinstance(spec, Mapping):
                continue
            out[name] = StateDef(name, str(spec.get("label", name)), bool(spec.get("terminal", True)),
                                 self.pos.key(path))
        return out

    # steps -------------------------------------------------------------------------------------

    def steps(self, items: Any) -> tuple[Step, ...]:
        if not isinstance(items, list):
            return ()
        out: list[Step] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
                continue
            sid = item["id"]
            path = ("steps", i)
            if sid == "end":
                self.error('a step cannot be called "end": "end" is the target that ends the flow', path + ("id",))
                continue
            if sid in seen:
                first = self.pos.value(("steps", seen[sid], "id"))
                self.error(f'duplicate step id "{sid}"', path + ("id",),
                           hint=f"already used at line {first.line}" if first else None)
                continue
            seen[sid] = i
            out.append(self.step(item, path))
        return tuple(out)

    def step(self, item: Mapping[str, Any], path: tuple) -> Step:
        sid = item["id"]
        where = f'step "{sid}"'
        positions = {k: p for k in ("family", "connector", "on", "when", "retry", "wait", "timeout")
                     if (p := self.pos.value(path + (k,)) if (path + (k,)) in self.pos.values else None)}
        when = None
        if isinstance(item.get("when"), str):
            wpath = path + ("when",)
            base = self.pos.values.get(wpath)
            if base is not None and self.pos.quoted.get(wpath):
                base = SourcePosition(base.file, base.line, base.column + 1)
                positions["when"] = base
            try:
                when = expr_mod.parse(item["when"])
            except expr_mod.ExprError as exc:
                pos = SourcePosition(base.file, base.line, base.column + exc.column - 1) if base else None
                self.errors.append(FlowDefinitionError(f"{where}: bad condition: {exc.message} "
                                                       f"(column {exc.column} of the condition)", position=pos,
                                                       hint="see docs/flows.md, « Conditions »"))
        retry = self.retry(item.get("retry"), path + ("retry",), where)
        timeout = self.duration(item.get("timeout"), path + ("timeout",), DEFAULT_TIMEOUT, f"{where}: timeout")
        wait = None
        if isinstance(item.get("wait"), Mapping):
            w = item["wait"]
            wait = WaitPolicy(
                self.duration(w.get("check_every"), path + ("wait", "check_every"), DEFAULT_CHECK_EVERY,
                              f"{where}: wait.check_every") or DEFAULT_CHECK_EVERY,
                self.duration(w.get("deadline"), path + ("wait", "deadline"), None, f"{where}: wait.deadline"))
        on: dict[str, Target] = {}
        if isinstance(item.get("on"), Mapping):
            for outcome, raw in item["on"].items():
                target = self.target(raw, path + ("on", outcome))
                if target is not None:
                    on[outcome] = target
        params = item.get("params") if isinstance(item.get("params"), Mapping) else {}
        return Step(id=sid, label=str(item.get("label", sid)), family=str(item.get("family", "")),
                    connector=str(item.get("connector", "")), when=when, params=dict(params or {}), retry=retry,
                    timeout=timeout or DEFAULT_TIMEOUT, wait=wait, on=on, position=self.pos.value(path),
                    where=positions)

    def retry(self, raw: Any, path: tuple, where: str) -> RetryPolicy:
        if not isinstance(raw, Mapping):
            return RetryPolicy()
        attempts = raw.get("attempts") if isinstance(raw.get("attempts"), int) and raw["attempts"] >= 1 \
            and not isinstance(raw["attempts"], bool) else DEFAULT_ATTEMPTS
        backoff = self.duration(raw.get("backoff"), path + ("backoff",), DEFAULT_BACKOFF, f"{where}: retry.backoff")
        max_backoff = self.duration(raw.get("max_backoff"), path + ("max_backoff",),
                                    max(DEFAULT_MAX_BACKOFF, backoff or DEFAULT_BACKOFF), f"{where}: retry.max_backoff")
        assert backoff is not None and max_backoff is not None
        if max_backoff < backoff:
            self.error(f"{where}: retry.max_backoff ({format_duration(max_backoff)}) is shorter than retry.backoff "
                       f"({format_duration(backoff)})", path + ("max_backoff",),
                       hint="max_backoff caps the growing delay, so it must be at least backoff")
        return RetryPolicy(attempts, backoff, max_backoff)

    def target(self, raw: Any, path: tuple) -> Target | None:
        position = self.pos.value(path)
        if raw == "end":
            return Target("end", None, position)
        if isinstance(raw, str):
            return Target("step", raw, position)
        if isinstance(raw, Mapping) and isinstance(raw.get("state"), str):
            return Target("state", raw["state"], self.pos.value(path + ("state",)) or position)
        return None  # the schema reports it


def _flow_from(path: Path) -> tuple[Flow | None, list[FlowDefinitionError]]:
    return _build(*read_yaml(path))


def flow_from_text(text: str, file: str) -> tuple[Flow | None, list[FlowDefinitionError]]:
    """The flow a text holds (as if read from ``file``) and its shape errors: a stored flow version is read so."""
    return _build(*parse_yaml(text, file))


def _build(data: Any, pos: Positions, errors: list[FlowDefinitionError]) -> tuple[Flow | None, list[FlowDefinitionError]]:
    if data is None:
        return None, errors
    if not isinstance(data, Mapping):
        return None, errors + [FlowDefinitionError("a flow file holds a mapping (id:, label:, fields:, steps:)",
                                                   position=pos.value(()))]
    errors = errors + shape_errors(data, pos)
    builder = _Builder(dict(data), pos)
    flow = builder.build()
    errors.extend(builder.errors)
    errors.sort(key=lambda e: (e.position.line, e.position.column) if e.position else (0, 0))
    return flow, errors


def load_flow(path: Path | str) -> Flow:
    """Load one flow file; raise InvalidFlows listing every shape error."""
    flow, errors = _flow_from(Path(path))
    if errors or flow is None:
        raise InvalidFlows(errors)
    return flow


def load_flows(paths: Iterable[Path], *, keep_invalid: bool = False
               ) -> tuple[dict[str, Flow], list[FlowDefinitionError]]:
    """Load every file; return the flows that loaded and every error.

    A file with shape errors is left out of the flows, unless ``keep_invalid``: then the
    best-effort model built from it is kept too, so that ``validate_flow`` can report its
    reference errors in the same run (``flowbus flows validate`` does this).
    """
    flows: dict[str, Flow] = {}
    errors: list[FlowDefinitionError] = []
    for path in paths:
        flow, errs = _flow_from(Path(path))
        errors.extend(errs)
        if flow is None or (errs and not keep_invalid):
            continue
        if flow.id in flows:
            errors.append(FlowDefinitionError(f'duplicate flow id "{flow.id}" (also in {flows[flow.id].source})',
                                              position=flow.where.get("id", flow.position), hint="each flow id is unique"))
            continue
        flows[flow.id] = flow
    return flows, errors


__all__ = ["flow_from_text", "load_flow", "load_flows", "parse_yaml", "parse_duration", "format_duration", "read_yaml"]

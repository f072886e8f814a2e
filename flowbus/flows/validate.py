"""Flow definition checks: every error at once, each with file, line, column, message and hint.

Two layers (STYLE.md habit 4):

* ``shape_errors`` applies schemas/flow.schema.json (JSON Schema 2020-12, through the
  ``jsonschema`` package) to the YAML data and turns each schema error into a
  ``FlowDefinitionError`` at the offending key or value, with a "did you mean" hint;
* ``validate_flow`` checks what a schema cannot: connector families and instances, outcome
  targets, fields named in conditions, unreachable steps and loops without exit.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from flowbus.errors import FlowDefinitionError, SourcePosition
from flowbus.flows.model import BUILTIN_STATES, FILE_TYPES, Flow, Step, Target

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "flow.schema.json"

Path_ = tuple[str | int, ...]


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """``did you mean "signature"?`` for a near miss, else None."""
    matches = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f'did you mean "{matches[0]}"?' if matches else None


def hint_for(word: str, options: Iterable[str], what: str) -> str:
    options = sorted(set(options))
    return did_you_mean(word, options) or (f"{what}: {', '.join(options)}" if options else f"no {what} declared")


class Positions:
    """Where each key and value of the YAML document sits (path → position)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.keys: dict[Path_, SourcePosition] = {}
        self.values: dict[Path_, SourcePosition] = {}
        self.quoted: dict[Path_, bool] = {}  # scalar written between quotes (shifts columns by one)

    def key(self, path: Path_) -> SourcePosition | None:
        return self.keys.get(path) or self.value(path)

    def value(self, path: Path_) -> SourcePosition | None:
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get(())


# ---- shape (JSON Schema) -----------------------------------------------------------------------

@lru_cache(maxsize=1)
def flow_schema() -> dict[str, Any]:
    """schemas/flow.schema.json, read once (the repository's copy: flowbus runs from its tree)."""
    try:
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except OSError as exc:
        from flowbus.errors import ConfigError
        raise ConfigError(f"the flow schema {SCHEMA_PATH} cannot be read: {exc.strerror}",
                          hint="run flowbus from its source tree (pip install -e .), where schemas/ lives") from exc


def describe(path: Path_, data: Any) -> str:
    """``step "signature": retry.backoff`` for ("steps", 0, "retry", "backoff")."""
    prefix = ""
    rest = list(path)
    if len(rest) >= 2 and rest[0] in ("steps", "fields") and isinstance(rest[1], int):
        items = data.get(rest[0]) if isinstance(data, Mapping) else None
        item = items[rest[1]] if isinstance(items, list) and rest[1] < len(items) else None
        key = "id" if rest[0] == "steps" else "name"
        ident = item.get(key) if isinstance(item, Mapping) else None
        kind = "step" if rest[0] == "steps" else "field"
        prefix = f'{kind} "{ident}"' if isinstance(ident, str) else f"{kind} #{rest[1] + 1}"
        rest = rest[2:]
    elif len(rest) >= 2 and rest[0] == "states":
        prefix = f'state "{rest[1]}"'
        rest = rest[2:]
    tail = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in rest).replace(".[", "[")
    if prefix and tail:
        return f"{prefix}: {tail}"
    return prefix or tail or "flow"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {"string": "text", "object": "a mapping (key: value)", "array": "a list", "integer": "an integer",
             "boolean": "true or false", "number": "a number"}


def shape_errors(data: Any, positions: Positions) -> list[FlowDefinitionError]:
    """Apply schemas/flow.schema.json; one FlowDefinitionError per schema error, at its key or value."""
    import jsonschema

    schema = flow_schema()
    validator = jsonschema.Draft202012Validator(schema)
    out: list[FlowDefinitionError] = []
    for err in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        out.extend(_translate(err, data, positions))
    out.sort(key=lambda e: (e.position.line, e.position.column) if e.position else (0, 0))
    return out


def _translate(err: Any, data: Any, positions: Positions) -> list[FlowDefinitionError]:
    path: Path_ = tuple(err.absolute_path)
    where = describe(path, data)
    last = path[-1] if path else None
    kind = err.validator
    schema_path = list(err.schema_path)
    if kind == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        extras = [k for k in err.instance if k not in err.schema.get("properties", {})]
        return [FlowDefinitionError(f'{where}: unknown key "{k}"' if path else f'unknown key "{k}"',
                                    position=positions.key(path + (k,)),
                                    hint=hint_for(k, known, "allowed keys")) for k in extras]
    if kind == "required":
        missing = [k for k in err.validator_value if not (isinstance(err.instance, Mapping) and k in err.instance)]
        return [FlowDefinitionError(f'{where}: missing required key "{k}"', position=positions.value(path),
                                    hint=None) for k in missing]
    if kind == "type":
        expected = err.validator_value
        expected_text = " or ".join(_EXPECTED.get(t, t) for t in (expected if isinstance(expected, list)
                                                                    else [expected]))
        return [FlowDefinitionError(f"{where} must be {expected_text}, not {_type_name(err.instance)}",
                                    position=positions.value(path))]
    if kind == "pattern" and "propertyNames" in schema_path:
        name = err.instance
        return [FlowDefinitionError(f'{where}: invalid name "{name}": use lower-case letters, digits, "_" or "-",'
                                    " starting with a letter", position=positions.key(path + (name,)))]
    if kind == "pattern" and err.schema.get("description", "").startswith("30s"):
        return [FlowDefinitionError(f'{where}: bad duration "{err.instance}"', position=positions.value(path),
                                    hint="write a number and a unit: 30s, 15m, 2h, 10d, or combined like 1h30m")]
    if kind == "pattern":
        what = {"id": "identifier", "name": "name", "start": "step id"}.get(str(last), "value")
        return [FlowDefinitionError(f'{where}: invalid {what} "{err.instance}"', position=positions.value(path),
                                    hint=f"it must match {err.validator_value}")]
    if kind == "enum":
        return [FlowDefinitionError(f'{where}: unknown value "{err.instance}"', position=positions.value(path),
                                    hint=hint_for(str(err.instance), [str(v) for v in err.validator_value],
                                                  "allowed values"))]
    if kind == "oneOf":  # an outcome target
        return [FlowDefinitionError(f"{where}: a target is a step id, \"end\" or {{state: <name>}}, "
                                    f"not {_type_name(err.instance)}", position=positions.value(path))]
    return [FlowDefinitionError(f"{where}: {err.message}", position=positions.value(path))]


# ---- references, reachability, loops -------------------------------------------------------------

def _pos(step: Step, key: str) -> SourcePosition | None:
    return step.where.get(key) or step.position


def outcome_edges(flow: Flow, step: Step) -> list[tuple[str, Target]]:
    """Every (outcome, target) a step can take, defaults included (``skipped`` only with ``when``)."""
    from flowbus.flows.machine import decide
    names = ["done", "rejected", *[n for n in step.on if n not in ("done", "rejected", "skipped")]]
    if step.when is not None:
        names.append("skipped")
    return [(name, decide(flow, step.id, name)) for name in names]


def _known_target(flow: Flow, target: Target) -> bool:
    if target.kind == "end":
        return True
    if target.kind == "step":
        return flow.has_step(target.name or "")
    return (target.name or "") in flow.states


def validate_flow(flow: Flow, *, families: Iterable[str], instances: set[str] | None
                  ) -> list[FlowDefinitionError]:
    """Reference and graph checks on a loaded flow; ``instances=None`` skips the instance check."""
    families = set(families)
    errors: list[FlowDefinitionError] = []
    step_ids = [s.id for s in flow.steps]
    if flow.start is not None and not flow.has_step(flow.start):
        errors.append(FlowDefinitionError(f'start: unknown step "{flow.start}"', position=flow.where.get("start"),
                                          hint=hint_for(flow.start, step_ids, "steps")))
    field_types = {f.name: f.type for f in flow.fields}
    for step in flow.steps:
        if step.family not in families:
            errors.append(FlowDefinitionError(
                f'step "{step.id}": unknown connector family "{step.family}"', position=_pos(step, "family"),
                hint=hint_for(step.family, families, "known families")))
        if instances is not None and step.connector not in instances:
            errors.append(FlowDefinitionError(
                f'step "{step.id}": unknown connector instance "{step.connector}"',
                position=_pos(step, "connector"),
                hint=did_you_mean(step.connector, instances)
                or "declare it in config/connectors/*.yml or through PUT /api/v1/connectors/{id}"))
        for outcome, target in step.on.items():
            if outcome == "timeout" and (step.wait is None or step.wait.deadline is None):
                errors.append(FlowDefinitionError(
                    f'step "{step.id}": outcome "timeout" is routed but the step has no wait deadline',
                    position=target.position or _pos(step, "on"),
                    hint="add wait: {deadline: 10d} (the engine ends a waiting step with \"timeout\" at its "
                         "deadline)"))
            if target.kind == "state" and target.name in BUILTIN_STATES:
                errors.append(FlowDefinitionError(
                    f'step "{step.id}": outcome "{outcome}" goes to the built-in state "{target.name}"',
                    position=target.position or _pos(step, "on"),
                    hint='use "end" to finish the flow, or declare a named state under states:'))
                continue
            if not _known_target(flow, target):
                what = "step" if target.kind == "step" else "state"
                options = step_ids if target.kind == "step" else list(flow.states)
                errors.append(FlowDefinitionError(
                    f'step "{step.id}": outcome "{outcome}" goes to unknown {what} "{target.name}"',
                    position=target.position or _pos(step, "on"),
                    hint=did_you_mean(target.name or "", options + (["end"] if what == "step" else []))
                    or (f"{what}s: {', '.join(options)}" if options else
                        ("declare it under states:" if what == "state" else "no such step"))))
        if step.when is not None:
            errors.extend(_condition_errors(flow, step, field_types))
    if not errors:  # graph checks need valid references
        errors.extend(_graph_errors(flow))
    return errors


def _condition_errors(flow: Flow, step: Step, field_types: Mapping[str, str]) -> list[FlowDefinitionError]:
    assert step.when is not None
    errors: list[FlowDefinitionError] = []
    base = _pos(step, "when")
    for name, column in step.when.name_refs():
        root, _, rest = name.partition(".")
        pos = SourcePosition(base.file, base.line, base.column + column - 1) if base else None
        if root == "fields" and rest not in field_types:
            errors.append(FlowDefinitionError(f'step "{step.id}": condition names unknown field "{rest}"',
                                              position=pos, hint=hint_for(rest, field_types, "fields")))
        elif root == "files" and field_types.get(rest) not in FILE_TYPES:
            files = [n for n, t in field_types.items() if t in FILE_TYPES]
            if rest in field_types:
                msg = f'step "{step.id}": condition uses files.{rest} but "{rest}" is not a file field'
                hint = f"write fields.{rest}"
            else:
                msg = f'step "{step.id}": condition names unknown file field "{rest}"'
                hint = hint_for(rest, files, "file fields")
            errors.append(FlowDefinitionError(msg, position=pos, hint=hint))
    for cmp in step.when.comparisons():  # fields.nature == 7 when nature's choices are "1".."6"
        from flowbus.flows.expr import ListLit, Literal, Name
        if not isinstance(cmp.left, Name) or not cmp.left.path.startswith("fields."):
            continue
        fname = cmp.left.path.partition(".")[2]
        if field_types.get(fname) != "choice":
            continue
        choices = flow.field(fname).choices or {}
        values = [cmp.right] if isinstance(cmp.right, Literal) else list(cmp.right.items) \
            if isinstance(cmp.right, ListLit) else []
        for lit in values:
            if lit.value is not None and lit.value not in choices:
                pos = SourcePosition(base.file, base.line, base.column + lit.column - 1) if base else None
                errors.append(FlowDefinitionError(
                    f'step "{step.id}": {lit} is not a choice of field "{fname}"', position=pos,
                    hint="choices: " + ", ".join(f"'{k}'" for k in choices)))
    return errors


def _graph_errors(flow: Flow) -> list[FlowDefinitionError]:
    if not flow.steps:
        return []
    errors: list[FlowDefinitionError] = []
    edges: dict[str, list[Target]] = {s.id: [t for _, t in outcome_edges(flow, s)] for s in flow.steps}
    # reachable from start
    seen: set[str] = set()
    todo = [flow.start] if flow.start else []
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        todo.extend(t.name for t in edges[sid] if t.kind == "step" and t.name is not None)
    for step in flow.steps:
        if step.id not in seen:
            errors.append(FlowDefinitionError(
                f'step "{step.id}" is unreachable: no outcome of an earlier step leads to it',
                position=step.position, hint=f'add an outcome leading to "{step.id}" or remove the step'))
    # steps from which no path reaches the end or a named state
    exits: set[str] = set()
    changed = True
    while changed:
        changed = False
        for sid, targets in edges.items():
            if sid not in exits and any(t.kind != "step" or t.name in exits for t in targets):
                exits.add(sid)
                changed = True
    stuck = [s for s in flow.steps if s.id not in exits and s.id in seen]
    reported: set[frozenset[str]] = set()
    for step in stuck:
        cycle = _cycle_from(step.id, edges)
        if frozenset(cycle) in reported:
            continue
        reported.add(frozenset(cycle))
        order = {s.id: i for i, s in enumerate(flow.steps)}
        first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        chain = " → ".join(f'"{c}"' for c in cycle + cycle[:1])
        errors.append(FlowDefinitionError(
            f"loop without exit: steps {chain} never reach the end"
            " or a named state", position=flow.step(cycle[0]).position,
            hint='give one of these steps an outcome leading to "end" or {state: …}'))
    return errors


def _cycle_from(start: str, edges: Mapping[str, Sequence[Target]]) -> list[str]:
    """Follow step edges from ``start`` until a step repeats; return that cycle (file order start)."""
    path: list[str] = []
    sid = start
    while sid not in path:
        path.append(sid)
        nxt = [t.name for t in edges[sid] if t.kind == "step" and t.name is not None]
        sid = nxt[0]  # a stuck step only has step targets
    return path[path.index(sid):]

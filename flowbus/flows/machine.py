"""The decision, as pure functions: outcome of a step → where the document goes next.

No I/O, no clock (STYLE.md habit 5): the engine (runner.py) records what these functions
decide.  Defaults, when a step's ``on:`` does not name the outcome:

* ``done``     → the next step in file order, or ``end`` after the last step;
* ``rejected`` → the named state ``rejected`` (« Refusé »);
* ``skipped``  → wherever ``done`` goes (the step's condition was false);
* any other outcome name → the default of its ``status`` when the caller gives it, else an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flowbus.errors import PermanentError
from flowbus.flows.expr import context
from flowbus.flows.model import DEFAULT_REJECTED_STATE, END, Flow, Target

__all__ = ["Target", "END", "decide", "first_step", "next_runnable", "should_run"]


def decide(flow: Flow, step_id: str, outcome_name: str, *, status: str | None = None) -> Target:
    """Where outcome ``outcome_name`` of step ``step_id`` leads.

    Raises:
        PermanentError: the outcome is neither routed by the step's ``on:`` nor a known outcome.
    """
    step = flow.step(step_id)
    explicit = step.on.get(outcome_name)
    if explicit is not None:
        return explicit
    if outcome_name == "done":
        nxt = flow.next_step_id(step_id)
        return Target("step", nxt) if nxt is not None else END
    if outcome_name == "rejected":
        return Target("state", DEFAULT_REJECTED_STATE)
    if outcome_name == "skipped":
        return decide(flow, step_id, "done")
    if status in ("done", "rejected") and status != outcome_name:
        return decide(flow, step_id, status)
    raise PermanentError(f'step "{step_id}" of flow "{flow.id}" ended with outcome "{outcome_name}", '
                         "which the flow does not route",
                         hint=f'add "{outcome_name}: <step | end | {{state: …}}>" under the step\'s on:')


def should_run(flow: Flow, step_id: str, ctx: Mapping[str, Any]) -> bool:
    """The step's ``when`` condition (true when it has none)."""
    step = flow.step(step_id)
    return step.when is None or bool(step.when.evaluate(ctx))


def next_runnable(flow: Flow, target: Target, fields: Mapping[str, Any], *, files: Iterable[str] = (),
                  document: Mapping[str, Any] | None = None) -> Target:
    """Follow ``target`` past steps whose condition is false, to a step that runs, the end or a state.

    Raises:
        PermanentError: skipped steps lead back to themselves (the validator rejects such flows).
    """
    ctx = context(fields, files, document)
    seen: list[str] = []
    while target.kind == "step":
        assert target.name is not None
        if should_run(flow, target.name, ctx):
            return target
        if target.name in seen:
            raise PermanentError(f"flow {flow.id!r}: skipping steps loops ({' → '.join(seen + [target.name])})")
        seen.append(target.name)
        target = decide(flow, target.name, "skipped")
    return target


def skipped_steps(flow: Flow, target: Target, fields: Mapping[str, Any], *, files: Iterable[str] = (),
                  document: Mapping[str, Any] | None = None) -> list[str]:
    """The steps ``next_runnable`` passes over, in order (for the journal)."""
    ctx = context(fields, files, document)
    out: list[str] = []
    while target.kind == "step" and target.name not in out and not should_run(flow, target.name or "", ctx):
        out.append(target.name or "")
        target = decide(flow, target.name or "", "skipped")
    return out


def first_step(flow: Flow, fields: Mapping[str, Any], *, files: Iterable[str] = (),
               document: Mapping[str, Any] | None = None) -> Target:
    """Where a started document goes: the first step that runs, or the end for a flow without steps."""
    if not flow.steps or flow.start is None:
        return END
    return next_runnable(flow, Target("step", flow.start), fields, files=files, document=document)

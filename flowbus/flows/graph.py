"""Mermaid rendering of a flow: steps, outcomes, conditions on edges, skipped paths dashed."""

from __future__ import annotations

from flowbus.flows.model import Flow, Step, Target


def _text(value: str) -> str:
    """Mermaid label text: quotes and angle brackets as entity codes."""
    return (value.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
            .replace("|", "#124;"))


def to_mermaid(flow: Flow) -> str:
    """A ``flowchart TD`` for the flow.

    Each edge is labelled with its outcome name; an edge into a step with a condition also
    shows the condition (« si … »), and a dashed edge leaves that step for where the
    document goes when the condition is false (« sinon »).
    """
    from flowbus.flows.validate import outcome_edges

    ids = {s.id: f"s{i}" for i, s in enumerate(flow.steps)}
    state_ids: dict[str, str] = {}
    lines = ["flowchart TD", f'    start(["{_text(flow.label)}"])']
    for step in flow.steps:
        detail = f"{step.family} · {step.connector}"
        if step.wait is not None:
            detail += " · attente"
        lines.append(f'    {ids[step.id]}["{_text(step.label)}<br/><small>{_text(step.id)} — {_text(detail)}</small>"]')
    used_end = False
    edges: list[str] = []

    def node(target: Target) -> str:
        nonlocal used_end
        if target.kind == "end":
            used_end = True
            return "finish"
        if target.kind == "state":
            name = target.name or ""
            if name not in state_ids:
                state_ids[name] = f"st{len(state_ids)}"
            return state_ids[name]
        return ids[target.name or ""]

    def cond(target: Target, label: str) -> str:
        if target.kind == "step":
            step: Step = flow.step(target.name or "")
            if step.when is not None:
                return f"{label} · si {step.when.source}" if label else f"si {step.when.source}"
        return label

    if flow.steps and flow.start:
        first = Target("step", flow.start)
        label = cond(first, "")
        arrow = f'-->|"{_text(label)}"|' if label else "-->"
        edges.append(f"    start {arrow} {node(first)}")
    else:
        edges.append(f"    start --> {node(Target('end'))}")
    for step in flow.steps:
        grouped: dict[tuple[str, bool], list[str]] = {}
        for outcome, target in outcome_edges(flow, step):
            dashed = outcome == "skipped"
            label = "sinon" if dashed else outcome
            grouped.setdefault((node(target), dashed), []).append(cond(target, label) if not dashed else label)
        for (dest, dashed), labels in grouped.items():
            text = _text(" / ".join(labels))
            edges.append(f'    {ids[step.id]} {"-.->" if dashed else "-->"}|"{text}"| {dest}')
    if used_end:
        lines.append('    finish(["Terminé"])')
    for name, sid in state_ids.items():
        lines.append(f'    {sid}(["{_text(flow.state_label(name))}<br/><small>{_text(name)}</small>"])')
    lines.extend(edges)
    lines.append("    classDef state fill:#fdecea,stroke:#c0392b")
    lines.append("    classDef final fill:#e8f5e9,stroke:#2e7d32")
    if state_ids:
        lines.append(f"    class {','.join(state_ids.values())} state")
    if used_end:
        lines.append("    class finish final")
    return "\n".join(lines) + "\n"

"""Mermaid rendering: every step, every target, conditions on edges, skipped paths dashed."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from flowbus.flows.graph import to_mermaid
from flowbus.flows.loader import load_flow


def flow_from(tmp_path: Path, body: str):
    path = tmp_path / "g.yml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return load_flow(path)


def edges(text: str) -> list[tuple[str, str, str, str]]:
    """(source, arrow, label, destination) for each edge line."""
    out = []
    for line in text.splitlines():
        m = re.match(r'^\s+(\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$', line)
        if m:
            out.append((m.group(1), m.group(2), m.group(3) or "", m.group(4)))
    return out


def node_ids(text: str) -> dict[str, str]:
    """node id → its label text."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'^\s+(\w+)(?:\["|\(\[")(.*?)(?:"\]|"\]\))$', line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_steps_states_conditions_and_dashed_skips(tmp_path: Path) -> None:
    flow = flow_from(tmp_path, """\
        id: g
        label: "Graphe"
        fields:
          - {name: envoi_tdt, type: boolean, label: "TdT"}
        steps:
          - id: signature
            label: "Signature \\"électronique\\""
            family: signature
            connector: parapheur
            on: {rejected: {state: refuse}}
          - id: tdt
            label: "Télétransmission"
            family: tdt-actes
            connector: tdt
            when: fields.envoi_tdt == true
            wait: {check_every: 15m}
        states:
          refuse: {label: "Refusé par l'élu"}
        """)
    text = to_mermaid(flow)
    assert text.startswith("flowchart TD\n")
    nodes = node_ids(text)
    by_label = {label.split("<br/>")[0]: nid for nid, label in nodes.items()}
    sig, tdt = by_label["Signature #quot;électronique#quot;"], by_label["Télétransmission"]
    refuse, rejected, finish = by_label["Refusé par l'élu"], by_label["Refusé"], by_label["Terminé"]
    assert "attente" in nodes[tdt]
    e = edges(text)
    assert ("start", "-->", "", sig) in e
    assert (sig, "-->", "done · si fields.envoi_tdt == true", tdt) in e
    assert (sig, "-->", "rejected", refuse) in e
    assert (tdt, "-->", "done", finish) in e
    assert (tdt, "-->", "rejected", rejected) in e
    assert (tdt, "-.->", "sinon", finish) in e  # the skipped path, dashed
    assert not any(arrow == "-.->" for src, arrow, _, _ in e if src == sig)  # no condition: no skip edge
    # every edge ends on a declared node
    assert all(dst in nodes for _, _, _, dst in e) and all(src in nodes for src, _, _, _ in e)


def test_flow_without_steps(tmp_path: Path) -> None:
    text = to_mermaid(flow_from(tmp_path, 'id: vide\nlabel: "Vide"\n'))
    assert ("start", "-->", "", "finish") in edges(text)

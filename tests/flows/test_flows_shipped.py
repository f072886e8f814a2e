"""The flows shipped in config/flows: they load, validate against the shipped connector instances,
route as their cheminement booleans say, and render every step in Mermaid."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowbus.connectors.instances import load_yaml_instances
from flowbus.connectors.registry import FAMILIES
from flowbus.flows.graph import to_mermaid
from flowbus.flows.loader import load_flows
from flowbus.flows.machine import decide, first_step, next_runnable
from flowbus.flows.model import END, Target
from flowbus.flows.validate import outcome_edges, validate_flow

ROOT = Path(__file__).resolve().parents[2]
FLOWS_DIR = ROOT / "config" / "flows"
SHIPPED = {"deliberation", "pes", "rh-contrat", "rh-paie", "cimetiere", "demo", "courrier-prefecture", "pes-retour", "annulation-acte"}


@pytest.fixture(scope="module")
def flows():
    paths = sorted(FLOWS_DIR.glob("*.yml"))
    flows, errors = load_flows(paths)
    assert errors == [], [str(e) for e in errors]
    return flows


def test_every_shipped_flow_is_valid(flows) -> None:
    assert SHIPPED <= set(flows)
    instances = {i.id for i in load_yaml_instances(ROOT / "config" / "demo")}  # every instance the flows name
    for flow in flows.values():
        assert validate_flow(flow, families=FAMILIES, instances=instances) == [], flow.id


@pytest.mark.parametrize("flow_id", sorted(SHIPPED))
def test_mermaid_names_every_step(flows, flow_id: str) -> None:
    flow = flows[flow_id]
    text = to_mermaid(flow)
    for step in flow.steps:
        assert step.label.replace('"', "#quot;") in text
        assert f"<small>{step.id} — " in text
    for step in flow.steps:
        for _outcome, target in outcome_edges(flow, step):
            if target.kind == "state":
                assert f"<small>{target.name}</small>" in text
                assert flow.states[target.name].label in text


def test_labels_are_french_and_every_step_can_be_switched_off(flows) -> None:
    for flow_id in SHIPPED - {"demo"}:
        flow = flows[flow_id]
        for step in flow.steps:
            assert step.when is not None, f"{flow_id}.{step.id} has no cheminement condition"
            booleans = [n.split(".", 1)[1] for n in step.when.names() if n.startswith("fields.")]
            assert any(flow.field(b).type == "boolean" for b in booleans), (flow_id, step.id)


def route(flow, fields, files=()):
    """The steps a document visits when every step ends with ``done``."""
    visited = []
    target = first_step(flow, fields, files=files)
    while target.kind == "step":
        visited.append(target.name)
        target = next_runnable(flow, decide(flow, target.name, "done"), fields, files=files)
    return visited, target


def test_deliberation_routes(flows) -> None:
    flow = flows["deliberation"]
    defaults = {f.name: f.default for f in flow.fields if f.default is not None}
    assert route(flow, defaults) == (["signature", "tdt", "sae"], END)
    assert route(flow, {**defaults, "envoi_publication": True}) == (["signature", "tdt", "publication", "sae"], END)
    assert route(flow, {**defaults, "envoi_signature": False, "envoi_sae": False}) == (["tdt"], END)
    assert decide(flow, "tdt", "rejected") == Target("state", "refuse_prefecture")
    assert decide(flow, "tdt", "timeout") == Target("state", "sans_ar")
    assert flow.step("tdt").wait is not None and flow.step("tdt").wait.deadline is not None
    assert flow.field("numero_acte").pattern == "^[A-Z0-9_]{1,15}$"
    assert set(flow.field("nature").choices) == {"1", "2", "3", "4", "5", "6"}


def test_pes_rh_cimetiere_routes(flows) -> None:
    pes = flows["pes"]
    assert route(pes, {"envoi_signature": True, "envoi_tdt": True, "envoi_sae": True})[0] == ["signature", "tdt", "sae"]
    assert pes.step("tdt").family == "tdt-helios" and pes.step("tdt").params["acquit_field"] == "pes_acquit"
    contrat = flows["rh-contrat"]
    on = {f.name: True for f in contrat.fields if f.type == "boolean"}
    assert route(contrat, on)[0] == ["signature_autorite", "signature_agent", "mailsec", "sae"]
    assert contrat.step("signature_agent").connector == "parapheur-agent"
    assert route(flows["rh-paie"], {"envoi_mailsec": True, "envoi_sae": False}) == (["mailsec"], END)
    cim = flows["cimetiere"]
    all_on = {f.name: True for f in cim.fields if f.type == "boolean"}
    # no e-mail address for the family: the secure mail step is skipped
    assert route(cim, all_on)[0] == ["signature", "ged", "sae"]
    assert route(cim, {**all_on, "famille_email": "famille@example.fr"})[0] == ["signature", "mailsec", "ged", "sae"]

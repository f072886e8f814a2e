"""The pure decision: outcome → target, defaults, and skipping steps whose condition is false."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowbus.errors import PermanentError
from flowbus.flows.loader import load_flow
from flowbus.flows.machine import decide, first_step, next_runnable, skipped_steps
from flowbus.flows.model import END, Flow, Target

FLOW = """\
id: essai
label: "Essai"
fields:
  - {name: envoi_signature, type: boolean, label: "Signature"}
  - {name: envoi_tdt, type: boolean, label: "TdT"}
  - {name: envoi_sae, type: boolean, label: "SAE"}
  - {name: nature, type: choice, label: "Nature", choices: {"1": "Délibération", "2": "Arrêté"}}
  - {name: acte, type: file, label: "Acte"}
steps:
  - id: signature
    label: "Signature"
    family: signature
    connector: parapheur
    when: fields.envoi_signature
    on: {rejected: {state: refuse}, timeout: {state: expire}}
  - id: tdt
    label: "TdT"
    family: tdt-actes
    connector: tdt
    when: fields.envoi_tdt and files.acte
    on: {anomaly: signature, skipped: sae}
  - id: publication
    label: "Publication"
    family: notify
    connector: pub
    when: fields.nature == '1'
  - id: sae
    label: "SAE"
    family: sae
    connector: sae
    when: fields.envoi_sae
    on: {done: end, rejected: end}
states:
  refuse: {label: "Refusé"}
  expire: {label: "Expiré", terminal: false}
"""


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    path = Path(tmp_path_factory.mktemp("flows")) / "essai.yml"
    path.write_text(FLOW, encoding="utf-8")
    return load_flow(path)


@pytest.mark.parametrize(("step", "outcome", "expected"), [
    ("signature", "done", Target("step", "tdt")),            # default: next step
    ("signature", "rejected", Target("state", "refuse")),    # explicit
    ("signature", "timeout", Target("state", "expire")),     # custom outcome
    ("signature", "skipped", Target("step", "tdt")),         # default: like done
    ("tdt", "done", Target("step", "publication")),
    ("tdt", "rejected", Target("state", "rejected")),        # default named state
    ("tdt", "anomaly", Target("step", "signature")),
    ("tdt", "skipped", Target("step", "sae")),               # explicit skipped
    ("publication", "done", Target("step", "sae")),
    ("publication", "skipped", Target("step", "sae")),
    ("sae", "done", END),
    ("sae", "rejected", END),
    ("sae", "skipped", END),                                 # last step: end
])
def test_decide(flow: Flow, step: str, outcome: str, expected: Target) -> None:
    assert decide(flow, step, outcome) == expected


def test_unrouted_custom_outcome_falls_back_to_its_status(flow: Flow) -> None:
    assert decide(flow, "publication", "refused", status="rejected") == Target("state", "rejected")
    assert decide(flow, "publication", "partial", status="done") == Target("step", "sae")


def test_unrouted_custom_outcome_without_status_is_an_error(flow: Flow) -> None:
    with pytest.raises(PermanentError) as info:
        decide(flow, "publication", "refused")
    assert '"refused"' in info.value.message and "on:" in info.value.hint


A, B, C = True, False, None


@pytest.mark.parametrize(("fields", "files", "expected", "skipped"), [
    ({"envoi_signature": A, "envoi_tdt": A, "envoi_sae": A, "nature": "1"}, ["acte"],
     Target("step", "signature"), []),
    ({"envoi_signature": B, "envoi_tdt": A, "envoi_sae": A}, ["acte"], Target("step", "tdt"), ["signature"]),
    # tdt skipped → its explicit "skipped: sae" jumps over publication
    ({"envoi_signature": B, "envoi_tdt": A, "envoi_sae": A, "nature": "1"}, [], Target("step", "sae"),
     ["signature", "tdt"]),
    ({"envoi_signature": B, "envoi_tdt": B, "envoi_sae": B}, [], END, ["signature", "tdt", "sae"]),
    ({}, [], END, ["signature", "tdt", "sae"]),  # missing fields are null: every condition false
    ({"envoi_signature": C, "envoi_tdt": A, "nature": "1"}, ["acte"], Target("step", "tdt"), ["signature"]),
])
def test_first_step_skips_steps_whose_condition_is_false(flow: Flow, fields: dict, files: list[str],
                                                         expected: Target, skipped: list[str]) -> None:
    assert first_step(flow, fields, files=files) == expected
    assert skipped_steps(flow, Target("step", flow.start), fields, files=files) == skipped


@pytest.mark.parametrize(("target", "fields", "expected"), [
    (Target("step", "publication"), {"nature": "2", "envoi_sae": True}, Target("step", "sae")),
    (Target("step", "publication"), {"nature": "1"}, Target("step", "publication")),
    (Target("step", "publication"), {"nature": "2"}, END),
    (Target("state", "refuse"), {}, Target("state", "refuse")),
    (END, {}, END),
])
def test_next_runnable(flow: Flow, target: Target, fields: dict, expected: Target) -> None:
    assert next_runnable(flow, target, fields) == expected


def test_document_facts_are_available_to_conditions(tmp_path: Path) -> None:
    path = tmp_path / "doc.yml"
    path.write_text(textwrap.dedent("""\
        id: doc
        label: "Doc"
        steps:
          - {id: a, label: "A", family: notify, connector: n, when: "document.state == 'running'"}
        """), encoding="utf-8")
    flow = load_flow(path)
    assert first_step(flow, {}, document={"state": "running"}) == Target("step", "a")
    assert first_step(flow, {}, document={"state": "draft"}) == END


def test_flow_without_steps_ends_at_once(tmp_path: Path) -> None:
    path = tmp_path / "vide.yml"
    path.write_text('id: vide\nlabel: "Vide"\n', encoding="utf-8")
    assert first_step(load_flow(path), {}) == END


def test_skipping_loop_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "boucle.yml"
    path.write_text(textwrap.dedent("""\
        id: boucle
        label: "Boucle"
        steps:
          - {id: a, label: "A", family: notify, connector: n, when: "false", on: {skipped: b}}
          - {id: b, label: "B", family: notify, connector: n, when: "false", on: {skipped: a}}
        """), encoding="utf-8")
    with pytest.raises(PermanentError):
        first_step(load_flow(path), {})

"""Document fields checked against a flow: normalised values or a ValidationError naming the field."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from flowbus.errors import ValidationError
from flowbus.flows.fields import check_fields, missing_for_start
from flowbus.flows.loader import load_flow
from flowbus.flows.model import Flow


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    path = Path(tmp_path_factory.mktemp("fields")) / "f.yml"
    path.write_text(textwrap.dedent("""\
        id: f
        label: "F"
        fields:
          - {name: objet, type: text, label: "Objet", required: true, max_length: 10}
          - {name: numero, type: text, label: "Numéro", pattern: "^[A-Z0-9_]{1,15}$"}
          - {name: montant, type: number, label: "Montant"}
          - {name: envoi, type: boolean, label: "Envoi", default: true}
          - {name: nature, type: choice, label: "Nature", required: true, choices: {"1": "Délibération", "2": "Arrêté"}}
          - {name: date_decision, type: date, label: "Date"}
          - {name: courriel, type: email, label: "Courriel"}
          - {name: acte, type: file, label: "Acte", required: true}
          - {name: annexes, type: files, label: "Annexes"}
        """), encoding="utf-8")
    return load_flow(path)


@pytest.mark.parametrize(("values", "expected"), [
    ({"objet": "Voirie"}, {"objet": "Voirie"}),
    ({"numero": "DEL_2024_01"}, {"numero": "DEL_2024_01"}),
    ({"numero": ""}, {"numero": ""}),
    ({"montant": 12}, {"montant": 12}),
    ({"montant": 12.0}, {"montant": 12}),
    ({"montant": "12,50"}, {"montant": 12.5}),
    ({"montant": " 7 "}, {"montant": 7}),
    ({"envoi": "oui"}, {"envoi": True}),
    ({"envoi": "false"}, {"envoi": False}),
    ({"envoi": 0}, {"envoi": False}),
    ({"nature": "2"}, {"nature": "2"}),
    ({"nature": 1}, {"nature": "1"}),
    ({"date_decision": "2024-02-29"}, {"date_decision": "2024-02-29"}),
    ({"date_decision": dt.date(2024, 3, 1)}, {"date_decision": "2024-03-01"}),
    ({"courriel": " agent@mairie-exemple.fr "}, {"courriel": "agent@mairie-exemple.fr"}),
    ({"objet": None}, {"objet": None}),
])
def test_normalised(flow: Flow, values: dict, expected: dict) -> None:
    assert check_fields(flow, values, partial=True) == expected


@pytest.mark.parametrize(("values", "field", "part"), [
    ({"objt": "x"}, "objt", "n'a pas de champ « objt »"),
    ({"objet": 12}, "objet", "attend du texte"),
    ({"objet": "x" * 11}, "objet", "10 au plus"),
    ({"numero": "del-2024"}, "numero", "n'a pas la forme attendue"),
    ({"montant": "douze"}, "montant", "attend un nombre"),
    ({"montant": True}, "montant", "pas un booléen"),
    ({"montant": float("nan")}, "montant", "nombre fini"),
    ({"envoi": "peut-être"}, "envoi", "oui ou non"),
    ({"nature": "7"}, "nature", "ne fait pas partie des valeurs permises : 1 (Délibération), 2 (Arrêté)"),
    ({"nature": True}, "nature", "ne fait pas partie des valeurs permises"),
    ({"date_decision": "15/03/2024"}, "date_decision", "AAAA-MM-JJ"),
    ({"date_decision": "2023-02-29"}, "date_decision", "n'est pas une date qui existe"),
    ({"courriel": "agent@"}, "courriel", "n'est pas une adresse électronique valide"),
    ({"courriel": "a b@c.fr"}, "courriel", "n'est pas une adresse électronique valide"),
    ({"acte": "fichier.pdf"}, "acte", "est un champ fichier"),
    ({"annexes": []}, "annexes", "est un champ fichier"),
])
def test_rejected_with_the_field_named(flow: Flow, values: dict, field: str, part: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_fields(flow, values, partial=True)
    assert info.value.field == field
    assert part in info.value.message, info.value.message


def test_unknown_field_hint(flow: Flow) -> None:
    with pytest.raises(ValidationError) as info:
        check_fields(flow, {"objt": "x"}, partial=True)
    assert info.value.hint == 'did you mean "objet"?'


def test_not_a_mapping(flow: Flow) -> None:
    with pytest.raises(ValidationError) as info:
        check_fields(flow, ["objet"], partial=True)  # type: ignore[arg-type]
    assert info.value.field == "fields"


def test_complete_check_requires_required_fields(flow: Flow) -> None:
    with pytest.raises(ValidationError) as info:
        check_fields(flow, {"objet": "Voirie"}, partial=False)
    assert info.value.field == "nature" and "obligatoire" in info.value.message
    with pytest.raises(ValidationError) as info:
        check_fields(flow, {"objet": "  ", "nature": "1"}, partial=False)
    assert info.value.field == "objet"
    assert check_fields(flow, {"objet": "Voirie", "nature": "1"}, partial=False) == {"objet": "Voirie", "nature": "1"}


def test_missing_for_start(flow: Flow) -> None:
    assert missing_for_start(flow, {}, set()) == ["objet", "nature", "acte"]
    assert missing_for_start(flow, {"objet": "", "nature": "1"}, {"annexes"}) == ["objet", "acte"]
    assert missing_for_start(flow, {"objet": "Voirie", "nature": "1"}, {"acte"}) == []


def test_defaults_are_normalised_at_load_time(flow: Flow) -> None:
    assert flow.field("envoi").default is True

"""The condition language: parsing, evaluation, errors with columns, and no way to run code."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flowbus.flows.expr import ExprError, context, parse

CTX = context({"envoi_tdt": True, "envoi_sae": False, "nature": "2", "montant": 1500, "taux": 2.5,
               "objet": "Voirie communale", "date_decision": "2024-03-15", "vide": ""},
              ["arrete"], {"state": "running", "flow": "deliberation"})


@pytest.mark.parametrize(("text", "expected"), [
    ("fields.envoi_tdt", True),
    ("fields.envoi_sae", False),
    ("not fields.envoi_sae", True),
    ("fields.envoi_tdt and fields.envoi_sae", False),
    ("fields.envoi_tdt or fields.envoi_sae", True),
    ("fields.envoi_sae or not fields.envoi_tdt", False),
    ("not (fields.envoi_sae or fields.envoi_tdt)", False),
    ("fields.nature == '2'", True),
    ('fields.nature == "2"', True),
    ("fields.nature != '2'", False),
    ("fields.nature in ['1', '2', '3']", True),
    ("fields.nature in ['4', '5',]", False),
    ("fields.nature not in ['4', '5']", True),
    ("fields.montant > 1000", True),
    ("fields.montant >= 1500", True),
    ("fields.montant < 1500", False),
    ("fields.montant <= 1500.0", True),
    ("fields.montant == 1500.0", True),
    ("fields.taux > 2.25", True),
    ("fields.date_decision >= '2024-01-01'", True),
    ("'Voirie' in fields.objet", True),
    ("files.arrete", True),
    ("files.annexes", False),
    ("not files.annexes and files.arrete", True),
    ("document.state == 'running'", True),
    ("document.flow == 'deliberation'", True),
    ("fields.absent == null", True),
    ("fields.absent", None),
    ("fields.absent > 3", False),
    ("fields.absent in ['1']", False),
    ("fields.objet > 3", False),
    ("fields.envoi_tdt == 1", False),
    ("fields.envoi_tdt == true", True),
    ("fields.vide", ""),
    ("true and not false", True),
    ("null", None),
    ("12", 12),
    ("1.5", Decimal("1.5")),
    ("fields.envoi_sae or fields.envoi_tdt and fields.nature == '3'", False),
])
def test_evaluate(text: str, expected: object) -> None:
    assert parse(text).evaluate(CTX) == expected


def test_and_binds_tighter_than_or() -> None:
    e = parse("fields.a or fields.b and fields.c")
    assert e.evaluate(context({"a": True, "b": False, "c": False})) is True
    assert e.evaluate(context({"a": False, "b": True, "c": False})) is False


def test_truthiness_of_a_when_condition() -> None:
    e = parse("fields.vide")
    assert not e.evaluate(CTX)
    assert parse("not fields.vide").evaluate(CTX) is True


def test_names_and_columns() -> None:
    e = parse("fields.a and (files.acte or document.state == 'x')")
    assert e.names() == {"fields.a", "files.acte", "document.state"}
    assert e.name_refs() == [("fields.a", 1), ("files.acte", 15), ("document.state", 29)]


def test_missing_scopes_never_raise() -> None:
    e = parse("fields.a == 1 or files.b or document.state == 'done'")
    assert e.evaluate({}) is False


@pytest.mark.parametrize(("text", "column", "part"), [
    ("", 1, "empty condition"),
    ("fields.a = 1", 10, 'write "=="'),
    ("fields.a ==", 12, "expected a value"),
    ("fields.a and", 13, "expected a value"),
    ("(fields.a", 10, 'expected ")"'),
    ("fields.a fields.b", 10, 'missing "and"'),
    ("foo.bar", 1, 'unknown name "foo.bar"'),
    ("fields", 1, "exactly one dot"),
    ("fields.a.b", 1, "exactly one dot"),
    ("document.title", 1, 'unknown name "document.title"'),
    ("fields.a == 'x", 13, "unterminated string"),
    ("fields.a < 1 < 2", 14, "cannot be chained"),
    ("fields.a in [fields.b]", 14, "only literals"),
    ("fields.a in ['1'", 17, '"]"'),
    ("fields.a @ 1", 10, "unexpected character"),
    ("__import__('os')", 1, "unknown name"),
])
def test_syntax_errors_have_a_column(text: str, column: int, part: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert info.value.column == column, str(info.value)
    assert part in info.value.message


def test_no_python_evaluation_is_possible() -> None:
    # attribute access, calls and subscripts are not part of the grammar
    for text in ("fields.a.__class__", "fields.a()", "fields['a']", "(lambda: 1)", "fields.a + 1"):
        with pytest.raises(ExprError):
            parse(text)


def test_str_round_trips_to_the_same_meaning() -> None:
    e = parse("not fields.a and (fields.b in ['x', \"y\"] or fields.c >= 2.5)")
    again = parse(str(e.root))
    for values in ({"a": False, "b": "x", "c": 0}, {"a": False, "b": "z", "c": 3}, {"a": True, "b": "x", "c": 3},
                   {"a": False, "b": "z", "c": 1}):
        assert e.evaluate(context(values)) == again.evaluate(context(values))

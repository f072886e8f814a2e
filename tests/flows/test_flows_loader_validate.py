"""Flow definition errors: one test per class, each asserting file, line, column and message."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from flowbus.errors import FlowDefinitionError, InvalidFlows
from flowbus.flows.loader import load_flow, load_flows, parse_duration
from flowbus.flows.model import Target
from flowbus.flows.validate import validate_flow

FAMILIES = {"signature", "tdt-actes", "mailsec", "sae", "notify", "ged"}

BASE_FIELDS = """\
id: essai
label: "Essai"
fields:
  - {name: objet, type: text, label: "Objet"}
  - {name: acte, type: file, label: "Acte"}
  - {name: envoi, type: boolean, label: "Envoi"}
"""


def write(tmp_path: Path, body: str, name: str = "essai.yml") -> Path:
    path = tmp_path / name
    if body.startswith(BASE_FIELDS):
        rest, extra = body[len(BASE_FIELDS):], ""
        while rest.startswith("  - "):  # extra field lines right after the base fields stay as written
            line, _, rest = rest.partition("\n")
            extra += line + "\n"
        text = BASE_FIELDS + extra + textwrap.dedent(rest)
    else:
        text = textwrap.dedent(body)
    path.write_text(text, encoding="utf-8")
    return path


def shape(tmp_path: Path, body: str) -> list[FlowDefinitionError]:
    path = write(tmp_path, body)
    flows, errors = load_flows([path])
    assert flows == {}, "a file with shape errors must not give a flow"
    assert errors, "expected at least one error"
    return errors


def refs(tmp_path: Path, body: str, *, instances: set[str] | None = None) -> list[FlowDefinitionError]:
    path = write(tmp_path, body)
    flow = load_flow(path)
    return validate_flow(flow, families=FAMILIES, instances=instances)


def only(errors: list[FlowDefinitionError], contains: str) -> FlowDefinitionError:
    matching = [e for e in errors if contains in e.message]
    assert len(matching) == 1, [str(e) for e in errors]
    return matching[0]


def at(err: FlowDefinitionError, path: Path, line: int, column: int | None = None) -> None:
    assert err.position is not None
    assert err.position.file == str(path)
    assert err.position.line == line, str(err)
    if column is not None:
        assert err.position.column == column, str(err)


def test_a_valid_flow_loads_with_defaults_and_positions(tmp_path: Path) -> None:
    path = write(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            when: fields.envoi
            retry: {attempts: 5, backoff: 30s, max_backoff: 1h}
            timeout: 2m
            wait: {check_every: 15m, deadline: 10d}
            on:
              rejected: {state: refuse}
          - {id: archive, label: "Archivage", family: sae, connector: sae}
        states:
          refuse: {label: "Refusé", terminal: true}
        """)
    flow = load_flow(path)
    assert validate_flow(flow, families=FAMILIES, instances={"parapheur", "sae"}) == []
    sig = flow.step("signature")
    assert flow.start == "signature"
    assert sig.retry.attempts == 5 and sig.retry.backoff == timedelta(seconds=30)
    assert sig.retry.max_backoff == timedelta(hours=1)
    assert sig.timeout == timedelta(minutes=2)
    assert sig.wait is not None and sig.wait.deadline == timedelta(days=10)
    assert sig.on["rejected"] == Target("state", "refuse")
    assert sig.when is not None and sig.when.source == "fields.envoi"
    assert sig.position is not None and sig.position.line == 8
    archive = flow.step("archive")
    assert archive.retry.attempts == 3 and archive.timeout == timedelta(minutes=5) and archive.wait is None
    assert flow.next_step_id("signature") == "archive" and flow.next_step_id("archive") is None
    assert flow.field("acte").type == "file"
    assert set(flow.states) == {"refuse", "rejected"}


def test_unknown_key_with_hint(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            conector: parapheur
        """)
    err = only(errors, 'unknown key "conector"')
    at(err, path, 11, 5)
    assert err.hint == 'did you mean "connector"?'
    assert str(err).startswith(f"{path}:11:5: step \"signature\": unknown key \"conector\"")
    missing = only(errors, 'missing required key "connector"')
    at(missing, path, 8)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + "stpes: []\n")
    err = only(errors, 'unknown key "stpes"')
    at(err, path, 7, 1)
    assert err.hint == 'did you mean "steps"?'


def test_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            retry: {attempts: "five"}
        """)
    err = only(errors, "must be an integer")
    at(err, path, 12, 23)
    assert 'step "signature": retry.attempts must be an integer, not text' == err.message


def test_wrong_field_type_value(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, """\
        id: essai
        label: "Essai"
        fields:
          - {name: objet, type: txt, label: "Objet"}
        """)
    err = only(errors, 'unknown value "txt"')
    at(err, path, 4, 25)
    assert err.hint == 'did you mean "text"?'


def test_unknown_connector_family(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signtaure
            connector: parapheur
        """)
    err = only(errors, "unknown connector family")
    at(err, path, 10, 13)
    assert err.message == 'step "signature": unknown connector family "signtaure"'
    assert err.hint == 'did you mean "signature"?'
    assert str(err) == f'{path}:10:13: step "signature": unknown connector family "signtaure" — did you mean "signature"?'


def test_unknown_connector_instance_only_when_instances_are_known(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    body = BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheurr
        """
    assert refs(tmp_path, body, instances=None) == []
    err = only(refs(tmp_path, body, instances={"parapheur", "sae"}), "unknown connector instance")
    at(err, path, 11, 16)
    assert err.message == 'step "signature": unknown connector instance "parapheurr"'
    assert err.hint == 'did you mean "parapheur"?'


def test_unreachable_step(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            on: {done: end}
          - id: orpheline
            label: "Jamais atteinte"
            family: sae
            connector: sae
        """)
    err = only(errors, "unreachable")
    at(err, path, 13, 5)
    assert err.message.startswith('step "orpheline" is unreachable')


def test_outcome_target_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            on:
              done: archivage
              rejected: {state: refus}
          - {id: archive, label: "Archivage", family: sae, connector: sae}
        """)
    step_err = only(errors, 'unknown step "archivage"')
    at(step_err, path, 13, 13)
    assert step_err.message == 'step "signature": outcome "done" goes to unknown step "archivage"'
    assert step_err.hint == 'did you mean "archive"?'
    state_err = only(errors, 'unknown state "refus"')
    at(state_err, path, 14, 25)


def test_duplicate_field(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + '  - {name: objet, type: text, label: "Objet encore"}\n')
    err = only(errors, 'duplicate field "objet"')
    at(err, path, 7, 12)
    assert err.hint == "already declared at line 4"


def test_duplicate_step_id(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        steps:
          - {id: signature, label: "Signature", family: signature, connector: parapheur}
          - {id: signature, label: "Encore", family: signature, connector: parapheur}
        """)
    err = only(errors, 'duplicate step id "signature"')
    at(err, path, 9, 10)
    assert err.hint == "already used at line 8"


def test_bad_expression_points_at_the_column(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            when: fields.envoi = true
        """)
    err = only(errors, "bad condition")
    # "when: " starts at column 5, the value at 11, "=" is its 14th character
    at(err, path, 12, 11 + 13)
    assert 'write "=="' in err.message


def test_bad_expression_in_quotes(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            when: "fields.envoi and"
        """)
    err = only(errors, "bad condition")
    at(err, path, 12, 12 + 16)


def test_expression_naming_an_unknown_field(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            when: fields.envoi and fields.envoie_tdt
        """)
    err = only(errors, "unknown field")
    at(err, path, 12, 11 + len("fields.envoi and "))
    assert err.message == 'step "signature": condition names unknown field "envoie_tdt"'
    assert err.hint == 'did you mean "envoi"?'


def test_expression_files_of_a_non_file_field(tmp_path: Path) -> None:
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            when: files.objet
        """)
    err = only(errors, "not a file field")
    assert err.hint == "write fields.objet"


def test_expression_comparing_a_choice_with_a_value_it_does_not_have(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, """\
        id: essai
        label: "Essai"
        fields:
          - {name: nature, type: choice, label: "Nature", choices: {"1": "Délibération", "2": "Arrêté"}}
        steps:
          - id: tdt
            label: "TdT"
            family: tdt-actes
            connector: tdt
            when: fields.nature == 1
        """)
    err = only(errors, "is not a choice")
    at(err, path, 10, 11 + len("fields.nature == "))
    assert "'1'" in err.hint


def test_loop_without_exit(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: redaction
            label: "Rédaction"
            family: notify
            connector: notif
            on: {rejected: relecture}
          - id: relecture
            label: "Relecture"
            family: signature
            connector: parapheur
            on:
              done: redaction
              rejected: redaction
        """)
    err = only(errors, "loop without exit")
    at(err, path, 8, 5)
    assert '"redaction" → "relecture" → "redaction"' in err.message


def test_a_loop_with_an_exit_is_fine(tmp_path: Path) -> None:
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - {id: redaction, label: "Rédaction", family: notify, connector: notif}
          - id: relecture
            label: "Relecture"
            family: signature
            connector: parapheur
            on: {rejected: redaction, done: end}
        """)
    assert errors == []


def test_bad_duration(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            wait: {check_every: 15 minutes}
        """)
    err = only(errors, "bad duration")
    at(err, path, 12, 25)
    assert err.message == 'step "signature": wait.check_every: bad duration "15 minutes"'
    assert "1h30m" in err.hint


def test_bad_regex_pattern(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, """\
        id: essai
        label: "Essai"
        fields:
          - name: numero
            type: text
            label: "Numéro"
            pattern: "^[A-Z0-9_{1,15}$"
        """)
    err = only(errors, "bad regular expression")
    # the value starts at column 14, inside quotes; "[" is the 2nd character of the pattern
    at(err, path, 7, 14 + 1 + 1)
    assert "unterminated character set" in err.message


def test_pattern_on_a_non_text_field_and_missing_choices(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, """\
        id: essai
        label: "Essai"
        fields:
          - {name: n, type: number, label: "N", pattern: "^1$"}
          - {name: c, type: choice, label: "C"}
        """)
    at(only(errors, '"pattern" applies to text'), path, 4, 41)
    at(only(errors, 'needs "choices"'), path, 5)


def test_bad_default_value(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, """\
        id: essai
        label: "Essai"
        fields:
          - {name: envoi, type: boolean, label: "Envoi", default: peut-être}
        """)
    at(only(errors, "bad default"), path, 4, 59)


def test_builtin_state_cannot_be_declared(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, BASE_FIELDS + """\
        states:
          done: {label: "Fini"}
        """)
    at(only(errors, "built in"), path, 8, 3)


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = shape(tmp_path, "id: essai\nlabel: [unclosed\nfields: []\n")
    assert len(errors) == 1
    assert errors[0].position is not None and errors[0].position.file == str(path)
    assert errors[0].message.startswith("YAML syntax error")


def test_every_error_is_reported_not_only_the_first(tmp_path: Path) -> None:
    errors = shape(tmp_path, BASE_FIELDS + '  - {name: objet, type: text, label: "Doublon"}\n' + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            timeout: 2 minutes
            when: fields.envoi ==
            tri: {}
        """)
    messages = " | ".join(e.message for e in errors)
    for part in ("duplicate field", "bad duration", "bad condition", 'unknown key "tri"'):
        assert part in messages, messages
    lines = [e.position.line for e in errors if e.position]
    assert lines == sorted(lines)


def test_load_flow_raises_invalid_flows_with_all_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE_FIELDS + "stpes: []\nfoo: 1\n")
    with pytest.raises(InvalidFlows) as info:
        load_flow(path)
    assert len(info.value.errors) == 2


def test_duplicate_flow_id_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, BASE_FIELDS, "a.yml")
    b = write(tmp_path, BASE_FIELDS, "b.yml")
    flows, errors = load_flows([a, b])
    assert list(flows) == ["essai"]
    err = only(errors, 'duplicate flow id "essai"')
    at(err, b, 1, 5)


def test_bare_on_key_is_not_turned_into_a_boolean(tmp_path: Path) -> None:
    path = write(tmp_path, BASE_FIELDS + """\
        steps:
          - id: signature
            label: "Signature"
            family: signature
            connector: parapheur
            on:
              done: end
        """)
    assert load_flow(path).step("signature").on == {"done": Target("end")}


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2)),
    ("10d", timedelta(days=10)), ("1h30m", timedelta(minutes=90)), ("1d2h3m4s", timedelta(days=1, seconds=7384)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "1m1h", "10 days", "-5s", "1.5h", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_start_naming_an_unknown_step(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        start: signatur
        steps:
          - {id: signature, label: "Signature", family: signature, connector: parapheur}
        """)
    err = only(errors, "start: unknown step")
    at(err, path, 7, 8)
    assert err.hint == 'did you mean "signature"?'


def test_timeout_routed_without_a_deadline_and_builtin_state_target(tmp_path: Path) -> None:
    path = tmp_path / "essai.yml"
    errors = refs(tmp_path, BASE_FIELDS + """\
        steps:
          - id: tdt
            label: "TdT"
            family: tdt-actes
            connector: tdt
            wait: {check_every: 15m}
            on:
              timeout: {state: sans_ar}
              done: {state: done}
        states:
          sans_ar: {label: "Sans AR", terminal: false}
        """)
    at(only(errors, 'outcome "timeout" is routed'), path, 14, 24)
    err = only(errors, 'built-in state "done"')
    at(err, path, 15, 21)
    assert 'use "end"' in err.hint

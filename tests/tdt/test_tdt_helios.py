"""PES V2: index fields and checks of PES_Aller, PES_Acquit and PES_Retour parsing, ``flowbus pes inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from flowbus.cli import main as cli_main
from flowbus.connectors.tdt.helios import (build_pes_acquit, check_pes_aller, decode_pj, encode_pj, inspect_pes,
                                           parse_pes_acquit, parse_pes_retour, pes_errors)
from flowbus.errors import PermanentError, ValidationError


def test_pes_inspect_prints_the_real_sample_index(shared: Path, capsys):
    path = shared / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"
    assert cli_main(["pes", "inspect", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("IdColl", "DteStr", "IdPost", "CodCol", "CodBud", "LibelleColBud", "exercice",
                                "nb_bordereaux", "nb_pj", "NomFic", "TypFic", "encoding")} == {
        "IdColl": "12345678912345", "DteStr": "2017-06-09", "IdPost": "034000", "CodCol": "123", "CodBud": "12",
        "LibelleColBud": "COMMUNE", "exercice": "2009", "nb_bordereaux": 1, "nb_pj": 0,
        "NomFic": "HELIOS_SIMU_ALR2_1496987735_826268894.xml", "TypFic": "PESALR2", "encoding": "ISO-8859-1"}
    assert out["bordereaux"] == [{"Id": "BORD767613", "domaine": "depense", "TypBord": "01", "IdBord": "1234567",
                                  "exercice": "2009", "nb_pieces": 1, "signed": False}]
    assert out["errors"] == [] and out["signed"] is False


def test_pes_inspect_reads_latin1_and_gzip_base64_pj(tmp_path: Path, make_pes, capsys):
    facture = b"%PDF-1.4 facture " + bytes(range(256)) * 40
    data = make_pes("PES_PJ_2026", pjs=[("TI00064567", "facture.pdf", facture), ("CP00065678", "contrat.pdf", b"%PDF")],
                    libelle="SYNDICAT DES EAUX DE L'ÉTANG")
    assert "É".encode("iso-8859-1") in data and b"H4sI" in data  # ISO-8859-1 bytes, gzip+base64 payloads
    path = tmp_path / "pes.xml"
    path.write_bytes(data)
    assert cli_main(["pes", "inspect", "--check", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["LibelleColBud"] == "SYNDICAT DES EAUX DE L'ÉTANG"
    assert out["nb_pj"] == 2
    assert out["pj"][0] == {"IdUnique": "TI00064567", "NomPJ": "facture.pdf", "MIMEType": "application/pdf",
                            "size": len(facture)}
    assert decode_pj(encode_pj(facture)) == facture


def test_signed_bordereau_is_reported(make_pes):
    data = make_pes().decode("iso-8859-1")
    sig = '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>'
    data = data.replace("</Piece>\n  </Bordereau>", f"</Piece>{sig}</Bordereau>")
    data = data.replace('<InfoDematerialisee V="0"/>', '<InfoDematerialisee V="1"/>')
    index = check_pes_aller(data.encode("iso-8859-1"))
    assert [b.signed for b in index.bordereaux] == [True] and index.signed


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('encoding="ISO-8859-1"', 'encoding="UTF-8"'), "encoding"),
    (lambda t: t.replace('<CodCol V="123"/>', '<CodCol V="000"/>'), "CodCol"),
    (lambda t: t.replace('<IdColl V="12345678912345"/>', '<IdColl V="123456789123456"/>'), "IdColl"),
    (lambda t: t.replace('<NomFic V="PES_TEST_001"/>', ""), "NomFic"),
    (lambda t: t.replace('<NbrPce V="1"/>', '<NbrPce V="3"/>'), "Bordereau[1234567]"),
    (lambda t: t.replace('<InfoDematerialisee V="0"/>', '<InfoDematerialisee V="1"/>'), "InfoDematerialisee"),
    (lambda t: t.replace('<DteStr V="2017-06-09"/>', '<DteStr V="09/06/2017"/>'), "DteStr"),
])
def test_pes_checks_name_the_element(make_pes, edit, field):
    data = edit(make_pes().decode("iso-8859-1")).encode("iso-8859-1")
    with pytest.raises(ValidationError) as err:
        check_pes_aller(data)
    assert err.value.field == field


def test_empty_pes_and_wrong_root_are_refused(make_pes, shared: Path):
    import re
    text = re.sub(r"<PES_DepenseAller>.*</PES_DepenseAller>", "", make_pes().decode("iso-8859-1"), flags=re.S)
    _, errs = pes_errors(text.encode("iso-8859-1"))
    assert [e.field for e in errs] == ["PES_Aller"]
    with pytest.raises(ValidationError) as err:
        inspect_pes((shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes())
    assert err.value.field == "pes"


def test_real_acquit_with_errors(shared: Path):
    ack = parse_pes_acquit((shared / "samples" / "pes" / "006111_190130123456-ACK-A3020100_A0000SEN_KO.xml")
                           .read_bytes())
    assert ack.nom_fic == "PesDepense-12-2018-209-2092019012917666666"
    assert ack.ok is False  # the first element fails; the verdict is the AND of every EtatAck
    assert [e.ok for e in ack.elements] == [False, True, True]
    assert ack.elements[1].num_bord == "123" and ack.elements[1].exercice == "2018"
    assert ack.errors == ["PJ TI00064567 : ERREUR_DOUBLON_PJ 1984 - L'identifiant unique de la PJ a déjà été "
                          "intégré dans HELIOS"]


def test_built_acquit_validates_and_parses(make_pes, acquit_schema):
    index = inspect_pes(make_pes("PES_X", pjs=[("TI1", "f.pdf", b"%PDF")]))
    ok = build_pes_acquit(index)
    acquit_schema.validate(etree.fromstring(ok))
    parsed = parse_pes_acquit(ok)
    assert parsed.ok and parsed.nom_fic == "PES_X" and [e.domaine for e in parsed.elements] == [5, 4]
    ko = build_pes_acquit(index, errors=[(4, "ERREUR_DOUBLON_PJ", "1984 - doublon")])
    acquit_schema.validate(etree.fromstring(ko))
    assert not parse_pes_acquit(ko).ok


def test_pes_retour_sample(shared: Path):
    r = parse_pes_retour((shared / "samples" / "pes" / "HELIOS_SIMU_RETOUR_1565181244_184723364.xml").read_bytes())
    assert (r.typ_fic, r.id_coll, r.cod_col, r.id_post) == ("PESRETOUR_DEP", "12345678900012", "221", "082008")
    with pytest.raises(PermanentError):
        parse_pes_retour(b"<?xml version='1.0'?><n:PES_Aller xmlns:n='x'/>")

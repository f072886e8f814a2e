"""ACTES v1.1: every message we produce validates against the official XSD; every préfecture sample parses."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from flowbus.connectors.tdt import actes as A
from flowbus.connectors.tdt import actes_messages as M
from flowbus.connectors.tdt.classification import (build_classification, parse_classification,
                                                   sample_classification)
from flowbus.errors import ValidationError

TODAY = date(2026, 1, 5)


def _acte(pdf: bytes, **overrides) -> A.Acte:
    values = dict(nature_code=1, matiere=(7, 1), decision_date=date(2026, 1, 2), numero_interne="DEL_2026_001",
                  objet="Budget primitif 2026 : vote à l'unanimité", document=A.ActeFile("deliberation.pdf", pdf, "99_DE"),
                  annexes=(A.ActeFile("annexe.pdf", pdf, "99_SE"),
                           A.ActeFile("plan.png", b"\x89PNG\r\n\x1a\n" + b"0" * 20, "99_DE")))
    values.update(overrides)
    return A.Acte(**values)


EMETTEUR = A.Emetteur(siren="123456789", departement="034", arrondissement=2, nature="02",
                      adresses_retour=("actes@mairie.example.fr",), referent_nom="Service des assemblées",
                      referent_email="assemblees@mairie.example.fr")


def _valid(schema, data: bytes) -> None:
    assert data.startswith(b"<?xml version='1.0' encoding='ISO-8859-1'?>")
    schema.validate(etree.fromstring(data))


def test_archive_follows_the_naming_rules_and_every_message_validates(actes_schema, pdf):
    archive = A.build_archive(_acte(pdf), EMETTEUR, classification_date=date(2019, 4, 18), on=TODAY, serial=3)
    assert archive.name == "SLO-EACT--123456789--20260105-3.tar.gz"
    assert archive.members == (
        "EACT--123456789--20260105-3.xml",
        "034-123456789-20260102-DEL_2026_001-DE-1-1_0.xml",
        "99_DE-034-123456789-20260102-DEL_2026_001-DE-1-1_1.pdf",
        "99_SE-034-123456789-20260102-DEL_2026_001-DE-1-1_2.pdf",
        "99_DE-034-123456789-20260102-DEL_2026_001-DE-1-1_3.png",
    )
    assert archive.id_acte == "034-123456789-20260102-DEL_2026_001-DE"
    unpacked = A.untar_gz(archive.content)
    assert list(unpacked) == list(archive.members)  # flat tar, in order
    assert unpacked[archive.members[2]] == pdf
    for name in archive.members[:2]:
        _valid(actes_schema, unpacked[name])
    env = etree.fromstring(unpacked[archive.members[0]])
    ns = {"a": A.NS}
    assert env.xpath("//a:Formulaire/a:NomFichier/text()", namespaces=ns) == [archive.members[1]]
    idcl = env.find(".//a:IDCL", ns)
    assert idcl.get("{http://xml.insee.fr/schema}SIREN") == "123456789"
    assert idcl.get(f"{{{A.NS}}}Departement") == "034"
    msg = etree.fromstring(unpacked[archive.members[1]])
    assert msg.get(f"{{{A.NS}}}NumeroInterne") == "DEL_2026_001"
    assert msg.find("a:Annexes", ns).get(f"{{{A.NS}}}Nombre") == "2"
    assert msg.findtext("a:Objet", namespaces=ns) == "Budget primitif 2026 : vote à l'unanimité"
    assert msg.xpath("a:Annexes/a:Annexe/a:NomFichier/text()", namespaces=ns) == list(archive.members[3:])


def test_act_message_with_five_levels_precedent_and_paper(actes_schema, pdf):
    acte = _acte(pdf, matiere=(5, 2, 1, 4, 3), annexes=(), document_papier=True,
                 precedent_id_acte="034-123456789-20251201-DEL_2025_099-DE", objet="Règlement intérieur")
    data = A.build_acte_message(acte, departement="02A", siren="123456789", classification_date=date(2019, 4, 18))
    _valid(actes_schema, data)
    root = etree.fromstring(data)
    assert [el.get(f"{{{A.NS}}}CodeMatiere") for el in root if "CodeMatiere" in el.tag] == ["5", "2", "1", "4", "3"]
    assert root.findtext(f"{{{A.NS}}}DocumentPapier") == "O"
    assert "Règlement".encode("iso-8859-1") in data


def test_collectivite_and_prefecture_messages_validate(actes_schema, pdf):
    acte = _acte(pdf)
    id_acte = A.id_acte("034", "123456789", acte)
    names = ["99_DE-x_1.pdf"]
    produced = [
        M.build_annulation(id_acte),
        M.build_demande_classification(date(2019, 4, 18)),
        M.build_demande_classification(),
        M.build_ar_acte(acte, id_acte=id_acte, date_reception=TODAY, classification_date=date(2019, 4, 18),
                        classification_en_cours=date(2019, 4, 18), document_name=names[0], annex_names=["a_2.pdf"]),
        M.build_anomalie_acte(acte, on=TODAY, nature="002", detail="classification pas à jour",
                              classification_date=date(2019, 4, 18), classification_en_cours=date(2020, 1, 1),
                              document_name=names[0], annex_names=[]),
        M.build_ar_annulation(id_acte, TODAY),
        M.build_ar_reponse("ARPieceComplementaire", id_acte=id_acte, date_courrier=TODAY, date_reception=TODAY),
        M.build_ar_reponse("ARReponseRejetLettreObservations", id_acte=id_acte, date_courrier=TODAY,
                           date_reception=TODAY),
        M.build_enveloppe_misillcl(departement="034", siren="123456789", message_names=["m_0.xml"], arrondissement=1),
        M.build_enveloppe_misillcl(departement="034", siren="123456789", message_names=["m_0.xml"]),
        build_classification(sample_classification()),
    ]
    for kind in M.PREFECTURE_LETTERS:
        produced.append(M.build_prefecture_letter(kind, id_acte=id_acte, on=TODAY, document_name="l_1.pdf",
                                                  text="Merci de préciser"))
    for letter_type, type_envoi in M.RESPONSE_ROOTS:
        produced.append(M.build_reponse(letter_type, type_envoi, id_acte=id_acte, date_courrier=TODAY,
                                        document_names=["r_1.pdf", "r_2.pdf"]))
    roots = set()
    for data in produced:
        _valid(actes_schema, data)
        roots.add(M.parse_message(data).root)
    assert len(roots) == 18  # every other message kind we write (Acte and its enveloppe: test above)


def test_prefecture_messages_round_trip_into_events(pdf):
    acte = _acte(pdf)
    id_acte = A.id_acte("034", "123456789", acte)
    ar = M.parse_message(M.build_ar_acte(acte, id_acte=id_acte, date_reception=TODAY,
                                         classification_date=date(2019, 4, 18),
                                         classification_en_cours=date(2020, 2, 1), document_name="d.pdf",
                                         annex_names=[]))
    assert (ar.event, ar.id_acte, ar.date, ar.numero_interne, ar.classification_date) == \
        ("ar", id_acte, TODAY, "DEL_2026_001", date(2020, 2, 1))
    letter = M.parse_message(M.build_prefecture_letter("LettreObservations", id_acte=id_acte, on=TODAY,
                                                       document_name="l.pdf", text="Motif : incompétence"))
    assert (letter.event, letter.code, letter.text, letter.files) == \
        ("lettre_observations", "4-1", "Motif : incompétence", ("l.pdf",))
    defere = M.parse_message(M.build_prefecture_letter("DefereTA", id_acte=id_acte, on=TODAY, document_name="r.pdf",
                                                       text="Vice de procédure"))
    assert (defere.event, defere.date, defere.text) == ("defere", TODAY, "Vice de procédure")


SAMPLES = {
    "aractes.xml": ("ar", "034-491011698-20171207-CL20171227_06-DE", date(2017, 12, 27)),
    "006-210600235-20180522-684-AI-1-2_5279.xml": ("ar", "006-210600235-20180522-684-AI", date(2018, 5, 28)),
    "044-214400152-20181106-TEST_DGCL_4-DE-6-2_10.xml": ("cancelled", "044-214400152-20181106-TEST_DGCL_4-DE",
                                                          date(2018, 11, 28)),
    "044-214400152----1-3_1.xml": ("anomaly", None, date(2018, 10, 12)),
    "999-1234----7-2_1.xml": ("classification", None, None),
    "EACT--SPREF0441-214400152-20181012-9.xml": ("enveloppe", None, None),
}


def test_every_prefecture_sample_parses_into_its_event(shared: Path):
    folder = shared / "samples" / "actes"
    assert sorted(p.name for p in folder.iterdir()) == sorted(SAMPLES)
    for name, (event, id_acte, when) in SAMPLES.items():
        msg = M.parse_message((folder / name).read_bytes())
        assert (msg.event, msg.id_acte, msg.date) == (event, id_acte, when), name
    anomaly = M.parse_message((folder / "044-214400152----1-3_1.xml").read_bytes())
    assert anomaly.anomaly_nature == "002"
    assert anomaly.reason == ("Anomalie de l'acte signalée par la préfecture (nature 002) : ODT-VERIF-01 : Votre acte "
                              "a été transmis avec une date de classification qui n'est pas à jour")
    assert anomaly.classification_date == date(2018, 10, 10)
    ar = M.parse_message((folder / "006-210600235-20180522-684-AI-1-2_5279.xml").read_bytes())
    assert (ar.numero_interne, ar.nature_code, ar.decision_date) == ("684", 3, date(2018, 5, 22))
    env = M.parse_message((folder / "EACT--SPREF0441-214400152-20181012-9.xml").read_bytes())
    assert env.siren == "214400152" and env.files == ("044-214400152----1-3_1.xml",)


def test_real_classification_is_parsed(shared: Path, actes_schema):
    xml = (shared / "samples" / "actes" / "999-1234----7-2_1.xml").read_bytes()
    c = parse_classification(xml)
    assert c.date == date(2019, 4, 18)
    assert c.natures[1].abbrev == "DE" and c.natures[1].type_pj[0] == "99_DE"
    assert c.natures[6].type_pj == ("99_AU", "99_SE")
    assert c.label((1, 1)) == "Marchés publics"
    assert c.has_matiere((1, 1, 10)) and not c.has_matiere((1, 99))
    assert len(c.matieres) == 291
    again = parse_classification(build_classification(c))  # our writer keeps everything
    assert again.matieres == c.matieres and again.natures.keys() == c.natures.keys()
    actes_schema.validate(etree.fromstring(build_classification(c)))


@pytest.mark.parametrize("overrides, field, words", [
    ({"numero_interne": "DEL/2026-01"}, "numero_interne", "caractères interdits '-/'"),
    ({"numero_interne": "del_2026"}, "numero_interne", "caractères interdits"),
    ({"numero_interne": "_DEL2026"}, "numero_interne", "ni commencer ni finir"),
    ({"numero_interne": "A" * 16}, "numero_interne", "dépasse 15"),
    ({"decision_date": date(2026, 1, 6)}, "decision_date", "dans le futur"),
    ({"document": None}, "document", "manquant"),
    ({"document": A.ActeFile("acte.docx", b"PK\x03\x04docx", "99_DE")}, "document", "doit être un PDF"),
    ({"matiere": (7, 9)}, "classification", "n'existe pas"),
    ({"matiere": (7,)}, "classification", "2 à 5 niveaux"),
    ({"nature_code": 9}, "nature_code", "inconnu"),
    ({"objet": ""}, "objet", "obligatoire"),
    ({"objet": "x" * 500}, "objet", "au plus 499"),
    ({"objet": "Budget € 2026"}, "objet", "ISO-8859-1"),
    ({"document": A.ActeFile("d.pdf", b"%PDF-1.4 x", "99_AR")}, "type_acte", "pas permis"),
    ({"annexes": (A.ActeFile("big.pdf", b"%PDF-1.4" + b"0" * 2000, "99_DE"),)}, "annexes[0]", "au-delà"),
    ({"annexes": (A.ActeFile("a.pdf", b"%PDF-1.4", "9_DE"),)}, "type_pj[0]", "invalide"),
    ({"annexes": (A.ActeFile("a.exe", b"MZ\x90\x00", "99_DE"),)}, "annexes[0]", "ni un PDF"),
])
def test_validation_errors_name_the_field(pdf, overrides, field, words):
    classification = sample_classification()
    with pytest.raises(ValidationError) as err:
        A.validate_acte(_acte(pdf, **overrides), today=TODAY, classification=classification, annex_max_size=1000)
    assert err.value.field == field
    assert words in err.value.message


def test_all_errors_are_reported_and_defaults_fill_typology(pdf):
    bad = _acte(pdf, numero_interne="a-b", decision_date=date(2027, 1, 1), objet="")
    errs = A.acte_errors(bad, today=TODAY, classification=sample_classification())
    assert [e.field for e in errs] == ["numero_interne", "decision_date", "objet"]
    with pytest.raises(ValidationError) as err:
        A.validate_acte(bad, today=TODAY, classification=sample_classification())
    assert "decision_date" in err.value.hint and "objet" in err.value.hint
    untyped = _acte(pdf, document=A.ActeFile("d.pdf", pdf), annexes=(A.ActeFile("a.pdf", pdf),))
    filled = A.validate_acte(untyped, today=TODAY, classification=sample_classification())
    assert filled.document.type_pj == "99_DE" and filled.annexes[0].type_pj == "99_DE"
    with pytest.raises(ValidationError) as err:
        A.validate_acte(untyped, today=TODAY, classification=None)
    assert err.value.field == "type_acte"


def test_budget_xml_act_is_allowed_only_for_nature_5_classification_7_1(pdf):
    xml = A.ActeFile("budget.xml", b"<?xml version='1.0'?><DocumentBudgetaire/>", "99_BU")
    A.validate_acte(_acte(pdf, nature_code=5, document=xml, annexes=()), today=TODAY,
                    classification=sample_classification())
    with pytest.raises(ValidationError) as err:
        A.validate_acte(_acte(pdf, nature_code=1, document=A.ActeFile("d.xml", xml.content, "99_DE"), annexes=()),
                        today=TODAY, classification=sample_classification())
    assert err.value.field == "document"


def test_enveloppe_checks_its_identity():
    with pytest.raises(ValidationError) as err:
        A.build_enveloppe(A.Emetteur(siren="12345", departement="034", adresses_retour=("a@b.fr",)), ["m.xml"])
    assert err.value.field == "siren"
    with pytest.raises(ValidationError) as err:
        A.build_enveloppe(A.Emetteur(siren="123456789", departement="34", adresses_retour=("a@b.fr",)), ["m.xml"])
    assert err.value.field == "departement"
    with pytest.raises(ValidationError) as err:
        A.enveloppe_filename("123456789", TODAY, 10000)
    assert err.value.field == "serial"

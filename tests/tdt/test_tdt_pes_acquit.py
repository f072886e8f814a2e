"""PES_ACQUIT read as tdt.md §6.5 asks: the verdict is the AND of every EtatAck, and each error says where it points
(bordereau, PJ, pièce, ligne) — in ``parse_pes_acquit`` (field ``pes_acquit_errors``) and ``flowbus pes acquit``
run as a process (JSON out, exit 0 accepted / 1 refused / 2 unreadable, French messages)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from flowbus.connectors.tdt.helios import build_pes_acquit, inspect_pes, parse_pes_acquit
from tests.support.pes import pes_aller

ROOT = Path(__file__).resolve().parents[2]
KO_SAMPLE = "006111_190130123456-ACK-A3020100_A0000SEN_KO.xml"

# Hélios's answer to a PES whose dépense bordereau 41 has the same anomaly on two pièces (one of them on a
# ligne), and whose recette bordereau 41 has it too: written as the DGFiP schema lays it out (checked below)
PIECES_KO = """<?xml version="1.0" encoding="ISO-8859-1"?>
<n:PES_ACQUIT xmlns:n="http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour/v2">
 <Enveloppe><Parametres><Version V="2"/><TypFic V="PESALR2"/><NomFic V="PES_2026_MARS_003"/></Parametres>
  <Emetteur><Sigle V="HELIOS"/><Adresse V="DGFIP"/></Emetteur></Enveloppe>
 <EnTetePES><DteStr V="2026-03-03"/><IdPost V="034000"/><IdColl V="12345678912345"/><CodCol V="123"/>
  <CodBud V="12"/></EnTetePES>
 <ACQUIT><EnTeteAcquit><IdVer V="2"/></EnTeteAcquit>
  <ElementACQUIT><DomaineAck V="5"/><EtatAck V="0"/><NumBord V="41"/><ExerciceBord V="2026"/>
   <DetailPiece><NumPiece V="101"/>
    <Erreur><NumAnoAck V="ERREUR_AUTRE"/><LibelleAnoAck V="1971 - Compte fonction présent à tort"/></Erreur>
   </DetailPiece>
   <DetailPiece><NumPiece V="102"/>
    <Erreur><NumAnoAck V="ERREUR_AUTRE"/><LibelleAnoAck V="1971 - Compte fonction présent à tort"/></Erreur>
    <DetailLigne><NumLigne V="2"/>
     <Erreur><NumAnoAck V="ERREUR_AUTRE"/><LibelleAnoAck V="1971 - Compte fonction présent à tort"/></Erreur>
    </DetailLigne>
   </DetailPiece>
  </ElementACQUIT>
  <ElementACQUIT><DomaineAck V="6"/><EtatAck V="0"/><NumBord V="41"/><ExerciceBord V="2026"/>
   <DetailPiece><NumPiece V="101"/>
    <Erreur><NumAnoAck V="ERREUR_AUTRE"/><LibelleAnoAck V="1971 - Compte fonction présent à tort"/></Erreur>
   </DetailPiece>
  </ElementACQUIT>
  <ElementACQUIT><DomaineAck V="3"/><EtatAck V="0"/><NumBord V="42"/><ExerciceBord V="2026"/></ElementACQUIT>
  <ElementACQUIT><DomaineAck V="4"/><EtatAck V="1"/><IdUnique V="FACT20260001"/></ElementACQUIT>
 </ACQUIT>
</n:PES_ACQUIT>
""".encode("iso-8859-1")


def test_the_piece_example_is_a_valid_acquit(acquit_schema):
    acquit_schema.validate(etree.fromstring(PIECES_KO))  # raises on any departure from the DGFiP schema


def test_errors_on_two_pieces_never_read_the_same():
    acquit = parse_pes_acquit(PIECES_KO)
    assert not acquit.ok
    assert acquit.errors == [
        "dépense, bordereau 41 (exercice 2026), pièce 101 : ERREUR_AUTRE 1971 - Compte fonction présent à tort",
        "dépense, bordereau 41 (exercice 2026), pièce 102 : ERREUR_AUTRE 1971 - Compte fonction présent à tort",
        "dépense, bordereau 41 (exercice 2026), pièce 102, ligne 2 : ERREUR_AUTRE 1971 - Compte fonction présent "
        "à tort",
        "recette, bordereau 41 (exercice 2026), pièce 101 : ERREUR_AUTRE 1971 - Compte fonction présent à tort",
        "signature bordereau, bordereau 42 (exercice 2026) : refusé sans motif donné (EtatAck = 0)",
    ]
    assert len(set(acquit.errors)) == len(acquit.errors)


def test_the_real_acquit_keeps_its_wording():
    acquit = parse_pes_acquit((ROOT / ".." / "shared" / "samples" / "pes" / KO_SAMPLE).read_bytes())
    assert acquit.errors == ["PJ TI00064567 : ERREUR_DOUBLON_PJ 1984 - L'identifiant unique de la PJ a déjà été "
                             "intégré dans HELIOS"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowbus", "pes", "acquit", *args], capture_output=True,
                          text=True, encoding="utf-8", cwd=ROOT, timeout=60)


def test_command_on_the_real_refused_acquit(shared):
    done = _run(str(shared / "samples" / "pes" / KO_SAMPLE))
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert (out["NomFic"], out["accepted"], out["verdict"]) == (
        "PesDepense-12-2018-209-2092019012917666666", False, "refusé")
    assert [(e["DomaineAck"], e["EtatAck"], e["NumBord"], e["ExerciceBord"], e["IdUnique"]) for e in out["elements"]] == [
        (4, 0, None, None, "TI00064567"), (5, 1, "123", "2018", None), (4, 1, None, None, "CP00065678")]
    [err] = out["errors"]
    assert err == {"DomaineAck": 4, "domaine": "PJ", "EtatAck": 0, "NumAnoAck": "ERREUR_DOUBLON_PJ",
                   "LibelleAnoAck": "1984 - L'identifiant unique de la PJ a déjà été intégré dans HELIOS",
                   "NumBord": None, "ExerciceBord": None, "IdMarche": None, "IdUnique": "TI00064567",
                   "NumPiece": None, "NumLigne": None,
                   "message": "PJ TI00064567 : ERREUR_DOUBLON_PJ 1984 - L'identifiant unique de la PJ a déjà été "
                              "intégré dans HELIOS"}
    # the sample is out of schema by its CodCol "000" only: said, and the verdict is read anyway
    assert out["schema_valid"] is False and len(out["schema_errors"]) == 1 and "'000'" in out["schema_errors"][0]
    assert "n'est pas conforme au schéma PES_V2_Acquit_Autonome_V2.xsd" in done.stderr


def test_command_points_each_error_to_its_piece_and_line(tmp_path: Path):
    path = tmp_path / "PES_2026_MARS_003-ACK_KO.xml"
    path.write_bytes(PIECES_KO)
    done = _run(str(path))
    assert done.returncode == 1 and done.stderr == ""
    out = json.loads(done.stdout)
    assert out["schema_valid"] is True and out["schema_errors"] == []
    assert [(e["DomaineAck"], e["NumBord"], e["NumPiece"], e["NumLigne"], e["NumAnoAck"]) for e in out["errors"]] == [
        (5, "41", "101", None, "ERREUR_AUTRE"), (5, "41", "102", None, "ERREUR_AUTRE"),
        (5, "41", "102", "2", "ERREUR_AUTRE"), (6, "41", "101", None, "ERREUR_AUTRE"), (3, "42", None, None, None)]
    assert out["errors"][2]["LibelleAnoAck"] == "1971 - Compte fonction présent à tort"  # ISO-8859-1 read right


def test_command_on_an_accepted_acquit(tmp_path: Path, acquit_schema):
    ok = build_pes_acquit(inspect_pes(pes_aller("PES_2026_MARS_003")))
    acquit_schema.validate(etree.fromstring(ok))
    path = tmp_path / "ack.xml"
    path.write_bytes(ok)
    done = _run(str(path))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["NomFic"], out["accepted"], out["verdict"], out["errors"], out["schema_valid"]) == (
        "PES_2026_MARS_003", True, "accepté", [], True)
    assert [(e["DomaineAck"], e["NumBord"]) for e in out["elements"]] == [(5, "41"), (5, "42"), (6, "17")]


@pytest.mark.parametrize("content, message", [
    (None, "impossible de lire le fichier {path} : fichier introuvable"),
    (b"", "n'est pas un PES_ACQUIT lisible : PES_Acquit illisible (XML mal formé)"),
    (b"PK\x03\x04 not xml", "n'est pas un PES_ACQUIT lisible : PES_Acquit illisible (XML mal formé)"),
    ("PES_ALLER", "n'est pas un PES_ACQUIT lisible : attendu un PES_ACQUIT, reçu PES_Aller"),
])
def test_command_on_unreadable_input(tmp_path: Path, content, message):
    path = tmp_path / "acquit.xml"
    if content == "PES_ALLER":
        path.write_bytes(pes_aller())
    elif content is not None:
        path.write_bytes(content)
    done = _run(str(path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("erreur : ") and message.format(path=path) in done.stderr


async def test_the_tdt_helios_step_keeps_each_piece_in_its_errors(fake_runtime, sim, clock):
    """Hélios answers with errors on two pièces of the same bordereau: the step's ``pes_acquit_errors`` and its
    refusal reason name both pièces (the S²LOW simulator is scripted to hand over that acquit)."""
    from tests.tdt.test_tdt_steps import _ctx, _document, _instance
    from flowbus.connectors.tdt.steps import TdtHeliosConnector
    rt = fake_runtime
    sim.pes_outcome = "errors"
    conn = TdtHeliosConnector(_instance(sim, "tdt-helios"), rt)
    doc = await _document(rt, {}, {"pes": [("pes.xml", "application/xml", pes_aller("PES_2026_MARS_003"))]})
    out = await conn.start(_ctx(rt, conn.instance, doc))
    sim.pes[int(out.data["transaction_id"])].acquit = PIECES_KO  # what Hélios answered for this NomFic
    clock.advance(hours=2)
    ko = await conn.check(_ctx(rt, conn.instance, doc, out.data))
    assert ko.status == "rejected" and ko.fields["pes_acquit_ok"] is False
    errors = ko.fields["pes_acquit_errors"]
    assert errors[:2] == [
        "dépense, bordereau 41 (exercice 2026), pièce 101 : ERREUR_AUTRE 1971 - Compte fonction présent à tort",
        "dépense, bordereau 41 (exercice 2026), pièce 102 : ERREUR_AUTRE 1971 - Compte fonction présent à tort"]
    assert len(set(errors)) == len(errors) == 5
    assert "pièce 102, ligne 2" in ko.reason

"""ETSI EN 319 102-1 indications of ``verify`` and ``flowbus verify``, on real signatures and real crypto.

The "old" signatures are made by a PKI issued with fixed 2019 dates (``make_test_pki(now=2019-03-12)``:
the signer's certificate runs from 11 March 2019 to 11 March 2021, the CA to March 2029), over the
real unsigned PES_Aller sample.  Judged "now" (any date after March 2021) their signer certificate
has expired; judged ``--at 2019-03-12`` everything is valid.  No test depends on today's date
beyond "after 2021".
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from flowbus.cli import main
from flowbus.signature.base import Verification
from flowbus.signature.cades import sign_cades
from flowbus.signature.etsi import Indication, SubIndication
from flowbus.signature.explain import french_date
from flowbus.signature.keys import SigningKey
from flowbus.signature.pades import make_test_pdf, sign_pdf
from flowbus.signature.pki import TestPKI, _issue, _name, _rsa, make_test_pki
from flowbus.signature.verify import verify
from flowbus.signature.xades import DS, sign_pes

from .conftest import PES_SAMPLE

SIGNED_AT = datetime(2019, 3, 12, 9, 30, tzinfo=UTC)
AT = "2019-03-12"
PASSED = (Indication.TOTAL_PASSED, None)
OUT_OF_BOUNDS = (Indication.INDETERMINATE, SubIndication.OUT_OF_BOUNDS_NO_POE)
NO_CHAIN = (Indication.INDETERMINATE, SubIndication.NO_CERTIFICATE_CHAIN_FOUND)
HASH = (Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE)


def verdict(result: Verification) -> tuple[Indication, SubIndication | None]:
    status = result.status
    return status.indication, status.sub_indication


@pytest.fixture(scope="module")
def pki2019(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    pki = make_test_pki(tmp_path_factory.mktemp("pki2019"), now=SIGNED_AT)
    assert pki.signer.certificate.not_valid_after_utc == datetime(2021, 3, 11, 9, 30, tzinfo=UTC)
    return pki


@pytest.fixture(scope="module")
def old_pes(pki2019: TestPKI) -> bytes:
    """The real PES_Aller sample, signed on 12 March 2019 by a certificate that expired on 11 March 2021."""
    return sign_pes(PES_SAMPLE.read_bytes(), pki2019.signer, now=SIGNED_AT)


def flip_amount(signed_pes: bytes) -> bytes:
    """One byte changed inside the signed Bordereau (the amount 39724.75 becomes 39824.75)."""
    at = signed_pes.index(b'<MtHT V="39724.75"/>') + len(b'<MtHT V="397')
    tampered = signed_pes[:at] + b"8" + signed_pes[at + 1:]
    assert len(tampered) == len(signed_pes) and tampered != signed_pes
    return tampered


def signed_by_format(fmt: str, key: SigningKey) -> tuple[bytes, bytes | None, bytes, bytes | None]:
    """(data, detached signature, one-byte-altered data, its detached signature) for ``fmt``, signed at SIGNED_AT."""
    if fmt == "xades":
        signed = sign_pes(PES_SAMPLE.read_bytes(), key, now=SIGNED_AT)
        return signed, None, flip_amount(signed), None
    if fmt == "pades":
        signed = sign_pdf(make_test_pdf(2), key, now=SIGNED_AT)
        at = signed.index(b"/MediaBox [0 0 595 842]") + len(b"/MediaBox [0 0 59")
        return signed, None, signed[:at] + b"6" + signed[at + 1:], None
    content = b"Deliberation 2019-042: budget primitif, montant 39724.75 EUR"
    p7s = sign_cades(content, key, now=SIGNED_AT)
    return content, p7s, content.replace(b"39724", b"39824"), p7s


# ---- the library: every format -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xades", "pades", "cades"])
def test_each_format_maps_its_checks_onto_the_indications(pki2019, fmt):
    data, detached, altered, altered_sig = signed_by_format(fmt, pki2019.signer)
    at = SIGNED_AT + timedelta(hours=1)
    # Intact, signer certificate expired since: not a failure, not a pass — with or without trust anchors.
    [now] = verify(data, detached=detached)
    assert verdict(now) == OUT_OF_BOUNDS and now.intact and now.format == fmt
    [now_trusted] = verify(data, detached=detached, trusted=pki2019.trusted)
    assert verdict(now_trusted) == OUT_OF_BOUNDS
    # Judged at the signing date: passes only with its CA as trust anchor.
    [then] = verify(data, detached=detached, now=at)
    assert verdict(then) == NO_CHAIN and then.ok  # the old `ok` said yes here; the indication does not
    [then_trusted] = verify(data, detached=detached, trusted=pki2019.trusted, now=at)
    assert verdict(then_trusted) == PASSED
    # Trust anchors that the chain does not reach.
    [elsewhere] = verify(data, detached=detached, trusted=[pki2019.tsa.certificate], now=at)
    assert verdict(elsewhere) == NO_CHAIN and elsewhere.chain_status == "untrusted"
    # Before the certificate was issued.
    [early] = verify(data, detached=detached, trusted=pki2019.trusted, now=datetime(2018, 1, 1, tzinfo=UTC))
    assert verdict(early) == OUT_OF_BOUNDS
    # One byte changed: a failure, whatever the date and the trust anchors (it outranks the expiry).
    for when in (None, at):
        [bad] = verify(altered, detached=altered_sig, trusted=pki2019.trusted, now=when)
        assert verdict(bad) == HASH and not bad.intact
    assert verify(data, detached=detached, trusted=pki2019.trusted, now=at)[0].to_json()["indication"] == \
        "TOTAL-PASSED"


def test_a_wrong_signature_value_is_sig_crypto_failure(pki2019, old_pes):
    root = etree.fromstring(old_pes)
    value_el = root.find(f".//{{{DS}}}SignatureValue")
    raw = bytearray(base64.b64decode("".join(value_el.text.split())))
    raw[10] ^= 0x01
    tampered = old_pes.replace("".join(value_el.text.split()).encode()[:60],
                               base64.b64encode(bytes(raw)).decode().encode()[:60])
    assert tampered != old_pes
    [result] = verify(tampered, trusted=pki2019.trusted, now=SIGNED_AT)
    assert verdict(result) == (Indication.TOTAL_FAILED, SubIndication.SIG_CRYPTO_FAILURE)


def test_a_damaged_signature_is_format_failure_and_a_missing_certificate_no_signing_certificate(pki2019, old_pes):
    no_cert = etree.fromstring(old_pes)
    key_info = no_cert.find(f".//{{{DS}}}KeyInfo")
    key_info.getparent().remove(key_info)
    [result] = verify(etree.tostring(no_cert), trusted=pki2019.trusted, now=SIGNED_AT)
    assert verdict(result) == (Indication.INDETERMINATE, SubIndication.NO_SIGNING_CERTIFICATE_FOUND)
    no_signed_info = etree.fromstring(old_pes)
    signed_info = no_signed_info.find(f".//{{{DS}}}SignedInfo")
    signed_info.getparent().remove(signed_info)
    [result] = verify(etree.tostring(no_signed_info), trusted=pki2019.trusted, now=SIGNED_AT)
    assert verdict(result) == (Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE)


def test_an_expired_ca_is_a_chain_failure(tmp_path):
    """A CA outside its validity at the validation time, its end-entity certificate inside: not a pass."""
    ca_key = _rsa()
    ca_cert = _issue(None, _name("CA éphémère", org="flowbus"), ca_key, datetime(2019, 1, 1, tzinfo=UTC),
                     datetime(2019, 6, 1, tzinfo=UTC), is_ca=True)
    ca = SigningKey(ca_key, ca_cert)
    leaf_key = _rsa()
    leaf = SigningKey(leaf_key, _issue(ca, _name("Agent comptable"), leaf_key, datetime(2019, 1, 2, tzinfo=UTC),
                                       datetime(2020, 1, 1, tzinfo=UTC)), (ca_cert,))
    p7s = sign_cades(b"mandat", leaf, now=datetime(2019, 2, 1, tzinfo=UTC))
    [late] = verify(b"mandat", detached=p7s, trusted=[ca_cert], now=datetime(2019, 9, 1, tzinfo=UTC))
    assert verdict(late) == (Indication.INDETERMINATE, SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE)
    [inside] = verify(b"mandat", detached=p7s, trusted=[ca_cert], now=datetime(2019, 3, 1, tzinfo=UTC))
    assert verdict(inside) == PASSED


def test_a_defect_without_a_sub_indication_never_passes(pki):
    """A check that records a message without its sub-indication (a future format, a forgotten call) fails closed."""
    result = Verification("cades", "x", None, "unknown", True, errors=["something the code did not classify"])
    result.judge_chain(pki.signer.certificate, [], pki.trusted, None)
    assert result.status.indication is Indication.TOTAL_FAILED
    assert verdict(Verification("cades", None, None, "unknown", True)) == \
        (Indication.INDETERMINATE, SubIndication.NO_SIGNING_CERTIFICATE_FOUND)


def test_french_dates():
    assert french_date(datetime(2021, 3, 12, 23, 0, tzinfo=UTC)) == "12 mars 2021"
    assert french_date(datetime(2019, 8, 1, tzinfo=UTC)) == "1er août 2019"


# ---- flowbus verify ----------------------------------------------------------------------------


def run(capsys, *args: str | Path) -> tuple[int, str]:
    code = main(["verify", *map(str, args)])
    return code, capsys.readouterr().out


def test_cli_an_old_pes_whose_certificate_expired_since(pki2019, old_pes, tmp_path, capsys):
    path = tmp_path / "PESALR2-2019-signe.xml"
    path.write_bytes(old_pes)
    code, out = run(capsys, path)
    assert code == 2
    assert "INDETERMINATE (OUT_OF_BOUNDS_NO_POE) : le certificat du signataire a expiré le 11 mars 2021 ; " \
           "la signature est intacte." in out
    assert "relancez avec --at 2019-03-12" in out and "--ca" in out
    assert "INVALID" not in out and "TOTAL-FAILED" not in out
    # With the trust list the verdict is the same: the certificate is still expired today.
    code, out = run(capsys, path, "--ca", pki2019.ca_pem)
    assert code == 2 and "INDETERMINATE (OUT_OF_BOUNDS_NO_POE)" in out
    # --at alone judges no chain: never a pass.
    code, out = run(capsys, path, "--at", AT)
    assert code == 2 and "INDETERMINATE (NO_CERTIFICATE_CHAIN_FOUND)" in out and "aucune liste de confiance" in out
    # --at with the CA in the trust list (--trust is --ca): passes.
    code, out = run(capsys, path, "--at", AT, "--trust", pki2019.ca_pem)
    assert code == 0 and "TOTAL-PASSED : la signature est intacte" in out and "12 mars 2019" in out
    code, out = run(capsys, path, "--at", AT, "--ca", pki2019.ca_pem, "--json")
    [parsed] = json.loads(out)
    assert code == 0 and parsed["indication"] == "TOTAL-PASSED" and parsed["sub_indication"] is None
    assert parsed["chain_status"] == "trusted" and parsed["validation_time"].startswith("2019-03-12")
    code, out = run(capsys, path, "--json")
    [parsed] = json.loads(out)
    assert code == 2 and (parsed["indication"], parsed["sub_indication"]) == ("INDETERMINATE", "OUT_OF_BOUNDS_NO_POE")


def test_cli_one_changed_byte_is_total_failed(pki2019, old_pes, tmp_path, capsys):
    path = tmp_path / "tampered.xml"
    path.write_bytes(flip_amount(old_pes))
    for extra in ([], ["--at", AT, "--ca", str(pki2019.ca_pem)]):
        code, out = run(capsys, path, *extra)
        assert code == 1 and "TOTAL-FAILED (HASH_FAILURE) : le contenu signé a été modifié" in out


def test_cli_a_current_signature_with_its_ca_passes(pki, pes3, tmp_path, capsys):
    path = tmp_path / "pes.xml"
    path.write_bytes(sign_pes(pes3, pki.seal))
    code, out = run(capsys, path, "--ca", pki.ca_pem)
    assert code == 0 and out.count(": TOTAL-PASSED :") == 3
    assert "La révocation des certificats n'a pas été vérifiée" in out
    code, out = run(capsys, path)
    assert code == 2 and out.count("INDETERMINATE (NO_CERTIFICATE_CHAIN_FOUND)") == 3
    # Three signatures, one broken: the worst decides.
    third = path.read_bytes().index(b'Id="BORD1002"')
    data = path.read_bytes()
    at = data.index(b'<MtHT V="39724.75"/>', third) + len(b'<MtHT V="3')
    path.write_bytes(data[:at] + b"8" + data[at + 1:])
    code, out = run(capsys, path, "--ca", pki.ca_pem)
    assert code == 1 and out.count(": TOTAL-PASSED :") == 2 and out.count("TOTAL-FAILED (HASH_FAILURE)") == 1


def test_cli_detached_cades_of_the_seal(pki, pki2019, tmp_path, capsys):
    """The server seal's detached CAdES (as in archive packages): same indications."""
    (tmp_path / "manifest.xml").write_bytes(b"<manifest/>")
    (tmp_path / "manifest.xml.p7s").write_bytes(sign_cades(b"<manifest/>", pki.seal))
    code, out = run(capsys, tmp_path / "manifest.xml", "--detached", tmp_path / "manifest.xml.p7s",
                    "--ca", pki.ca_pem)
    assert code == 0 and "TOTAL-PASSED" in out
    code, out = run(capsys, tmp_path / "manifest.xml", "--detached", tmp_path / "manifest.xml.p7s",
                    "--ca", pki2019.ca_pem)  # another CA
    assert code == 2 and "INDETERMINATE (NO_CERTIFICATE_CHAIN_FOUND)" in out and "ne remonte à aucune" in out


def test_the_signer_certificate_pem_is_what_the_ca_issued(pki2019):
    """Guard on the fixture: the 2019 CA really issued the 2019 signer (so TOTAL-PASSED is not an artefact)."""
    ca = x509.load_pem_x509_certificate(pki2019.ca_pem.read_bytes())
    pki2019.signer.certificate.verify_directly_issued_by(ca)
    der = serialization.Encoding.DER
    assert ca.public_bytes(der) == pki2019.ca.certificate.public_bytes(der)


def test_cli_reads_its_trust_list_from_a_folder(pki2019, old_pes, tmp_path, capsys):
    """The trust list is a folder of CA certificates (<config dir>/trust by default, --trust-dir otherwise): a CA
    dropped there makes the chain trusted; a file that is not a certificate is named, in French."""
    path = tmp_path / "PESALR2-2019-signe.xml"
    path.write_bytes(old_pes)
    trust = tmp_path / "confiance"
    trust.mkdir()
    (trust / "README.md").write_text("des AC")  # ignored
    code, out = run(capsys, path, "--at", AT, "--trust-dir", trust)
    assert code == 2 and "INDETERMINATE (NO_CERTIFICATE_CHAIN_FOUND)" in out, "an empty list trusts nothing"
    (trust / "ac-racine.crt").write_bytes(Path(pki2019.ca_pem).read_bytes())
    code, out = run(capsys, path, "--at", AT, "--trust-dir", trust)
    assert code == 0 and "TOTAL-PASSED : la signature est intacte" in out
    (trust / "zz-cassé.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    code = main(["verify", str(path), "--at", AT, "--trust-dir", str(trust)])
    assert code == 2 and "zz-cassé.pem ne se lit pas comme un certificat" in capsys.readouterr().err

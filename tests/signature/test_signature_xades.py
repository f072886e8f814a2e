"""XAdES Hélios: sign each bordereau of a PES_Aller; xmlsec1 and our verifier agree; tampering and bad input."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from flowbus.errors import PermanentError
from flowbus.signature.keys import load_pkcs12
from flowbus.signature.verify import verify
from flowbus.signature.xades import DS, HELIOS_POLICY_HASH, HELIOS_POLICY_ID, XAD, sign_pes

SP_ID_ATTR = "http://uri.etsi.org/01903/v1.1.1#:SignedProperties"


def xmlsec_verify(path: Path, ca: Path, index: int) -> subprocess.CompletedProcess:
    """The command line of SHARED/SERVICES.md, pointed at the index-th signature of the file."""
    return subprocess.run(
        ["xmlsec1", "--verify", "--trusted-pem", str(ca), "--id-attr:Id", "Bordereau", "--id-attr:Id", SP_ID_ATTR,
         "--node-xpath", f"(//*[local-name()='Signature'])[{index}]", str(path)],
        capture_output=True, text=True, timeout=30)


def test_each_bordereau_signed_and_both_verifiers_accept(pki, pes3, tmp_path):
    signed = sign_pes(pes3, pki.seal, role="Ordonnateur", city="Démoville", postal_code="99000", country="France")
    assert signed.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert "Fournitures école".encode("iso-8859-1") in signed  # still ISO-8859-1, accents kept
    root = etree.fromstring(signed)
    bordereaux = root.findall(".//Bordereau")
    assert len(bordereaux) == 3
    for bord in bordereaux:
        sig = bord[-1]
        assert sig.tag == f"{{{DS}}}Signature"  # enveloped, last child of its Bordereau
        refs = sig.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
        assert refs[0].get("URI") == f"#{bord.get('Id')}"
        assert refs[1].get("URI") == f"#{sig.get('Id')}_SP"
        assert sig.findtext(f".//{{{XAD}}}SigPolicyId/{{{XAD}}}Identifier") == HELIOS_POLICY_ID
        assert sig.findtext(f".//{{{XAD}}}SigPolicyHash/{{{XAD}}}DigestValue") == HELIOS_POLICY_HASH
        assert sig.findtext(f".//{{{XAD}}}ClaimedRole") == "Ordonnateur"
    assert root.find(f"PES_PJ//{{{DS}}}Signature") is None  # PJ are never signed
    path = tmp_path / "signed.xml"
    path.write_bytes(signed)
    for index in (1, 2, 3):
        result = xmlsec_verify(path, pki.ca_pem, index)
        assert result.returncode == 0, result.stderr
    results = verify(signed, trusted=pki.trusted)
    assert [r.reference for r in results] == ["BORD1000", "BORD1001", "BORD1002"]
    for r in results:
        assert r.ok and r.intact and r.chain_status == "trusted" and r.format == "xades"
        assert r.signer == "Cachet serveur — Commune de Démo"
        assert r.policy == HELIOS_POLICY_ID
        assert abs(r.signed_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_one_changed_byte_fails_both_verifiers(pki, pes3, tmp_path):
    signed = sign_pes(pes3, pki.seal)
    # Change one byte inside the third bordereau's amount.
    third = signed.index(b'Id="BORD1002"')
    at = signed.index(b'<MtHT V="39724.75"/>', third) + len(b'<MtHT V="3')
    tampered = signed[:at] + b"8" + signed[at + 1:]
    assert len(tampered) == len(signed) and tampered != signed
    path = tmp_path / "tampered.xml"
    path.write_bytes(tampered)
    assert xmlsec_verify(path, pki.ca_pem, 1).returncode == 0
    assert xmlsec_verify(path, pki.ca_pem, 3).returncode != 0
    results = verify(tampered, trusted=pki.trusted)
    assert [r.intact for r in results] == [True, True, False]
    assert not results[2].ok
    assert any("digest mismatch" in e for e in results[2].errors)


def test_untrusted_and_unknown_chain(pki, pes3, tmp_path):
    signed = sign_pes(pes3, pki.signer)
    other = load_pkcs12(pki.seal_p12.read_bytes(), pki.password)  # same CA: trusted
    assert verify(signed, trusted=[other.chain[0]])[0].chain_status == "trusted"
    assert verify(signed)[0].chain_status == "unknown"
    assert verify(signed, trusted=[pki.tsa.certificate])[0].chain_status == \
        "untrusted"
    assert verify(signed, now=datetime.now(UTC) + timedelta(days=3 * 365))[0].chain_status == "expired"


def test_malformed_xml_is_refused_clearly(pki):
    with pytest.raises(PermanentError) as err:
        sign_pes(b'<?xml version="1.0"?><n:PES_Aller xmlns:n="urn:x"><Bordereau Id="a">', pki.seal)
    assert "malformed" in str(err.value) and err.value.field == "document"
    with pytest.raises(PermanentError):
        verify(b"<PES_Aller><unclosed></PES_Aller>")


def test_bordereau_without_id_names_its_position(pki, pes3):
    root = etree.fromstring(pes3)
    del root.findall(".//Bordereau")[1].attrib["Id"]
    data = etree.tostring(root, encoding="ISO-8859-1", xml_declaration=True)
    with pytest.raises(PermanentError) as err:
        sign_pes(data, pki.seal)
    assert "Bordereau #2" in str(err.value) and "PES_DepenseAller" in str(err.value)
    with pytest.raises(PermanentError, match="Bordereau #1: Id 'BORD1000' is used more than once"):
        sign_pes(pes3.replace(b'Id="BORD1002"', b'Id="BORD1000"'), pki.seal)


def test_expired_certificate_and_already_signed_refused(pki, pes3):
    with pytest.raises(PermanentError, match="expired"):
        sign_pes(pes3, pki.expired)
    with pytest.raises(PermanentError, match="already signed"):
        sign_pes(sign_pes(pes3, pki.seal), pki.seal)


TEMPLATE = """<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="XS1"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>\
<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>\
<ds:Reference URI="#{bord}"><ds:Transforms>\
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>\
<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>\
<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference>\
<ds:Reference URI="#XS1_SP"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>\
</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue>\
</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate/></ds:X509Data>\
</ds:KeyInfo><ds:Object><xad:QualifyingProperties xmlns:xad="http://uri.etsi.org/01903/v1.1.1#" Target="XS1">\
<xad:SignedProperties Id="XS1_SP"><xad:SignedSignatureProperties><xad:SigningTime>2026-01-05T09:00:00Z</xad:SigningTime>\
<xad:SigningCertificate><xad:Cert><xad:CertDigest><xad:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>\
<xad:DigestValue>{cert_digest}</xad:DigestValue></xad:CertDigest><xad:IssuerSerial><ds:X509IssuerName>{issuer}\
</ds:X509IssuerName><ds:X509SerialNumber>{serial}</ds:X509SerialNumber></xad:IssuerSerial></xad:Cert>\
</xad:SigningCertificate><xad:SignaturePolicyIdentifier><xad:SignaturePolicyId><xad:SigPolicyId>\
<xad:Identifier>urn:oid:1.2.250.1.131.1.5.18.21.1.7</xad:Identifier></xad:SigPolicyId><xad:SigPolicyHash>\
<xad:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>\
<xad:DigestValue>roF9+cfRHNPtVJolhdqfIqGMVuUXX8aR4rpiquf0u5E=</xad:DigestValue></xad:SigPolicyHash>\
</xad:SignaturePolicyId></xad:SignaturePolicyIdentifier></xad:SignedSignatureProperties></xad:SignedProperties>\
</xad:QualifyingProperties></ds:Object></ds:Signature>"""


def test_accepts_a_pes_signed_by_xmlsec1(pki, pes3, tmp_path):
    """A Hélios-shaped signature made by other software (xmlsec1 filling a template) verifies, and
    altering it after signing is detected."""
    cert = pki.signer.certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    template = TEMPLATE.format(bord="BORD1001", cert_digest=base64.b64encode(hashlib.sha256(der).digest()).decode(),
                               issuer=cert.issuer.rfc4514_string(), serial=cert.serial_number)
    text = pes3.decode("iso-8859-1")
    end_of_second = text.index("</Bordereau>", text.index('Id="BORD1001"'))
    (tmp_path / "template.xml").write_bytes(
        (text[:end_of_second] + template + text[end_of_second:]).encode("iso-8859-1"))
    done = subprocess.run(
        ["xmlsec1", "--sign", "--pkcs12", str(pki.signer_p12), "--pwd", pki.password, "--id-attr:Id", "Bordereau",
         "--id-attr:Id", SP_ID_ATTR, "--output", str(tmp_path / "xmlsec.xml"), str(tmp_path / "template.xml")],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    signed = (tmp_path / "xmlsec.xml").read_bytes()
    [result] = verify(signed, trusted=pki.trusted)
    assert result.ok, result.errors
    assert result.reference == "BORD1001" and result.signer == "Marie Dupont"
    assert result.signed_at == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert result.policy == "urn:oid:1.2.250.1.131.1.5.18.21.1.7"
    altered = signed.replace("élémentaire n°2".encode("iso-8859-1"), "élémentaire n°9".encode("iso-8859-1"))
    assert altered != signed
    [bad] = verify(altered, trusted=pki.trusted)
    assert not bad.intact and not bad.ok


def test_accepts_a_global_signature_on_pes_aller(pki, pes3, tmp_path):
    """The Hélios fallback shape: one signature of the whole PES_Aller (by its Id), last child of the root."""
    cert = pki.signer.certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    root_id = etree.fromstring(pes3).get("Id")
    template = TEMPLATE.format(bord=root_id, cert_digest=base64.b64encode(hashlib.sha256(der).digest()).decode(),
                               issuer=cert.issuer.rfc4514_string(), serial=cert.serial_number)
    text = pes3.decode("iso-8859-1")
    end = text.rindex("</n:PES_Aller>")
    (tmp_path / "template.xml").write_bytes((text[:end] + template + text[end:]).encode("iso-8859-1"))
    done = subprocess.run(
        ["xmlsec1", "--sign", "--pkcs12", str(pki.signer_p12), "--pwd", pki.password, "--id-attr:Id",
         "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller:PES_Aller", "--id-attr:Id", SP_ID_ATTR,
         "--output", str(tmp_path / "global.xml"), str(tmp_path / "template.xml")],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    signed = (tmp_path / "global.xml").read_bytes()
    [result] = verify(signed, trusted=pki.trusted)
    assert result.ok and result.reference == root_id
    [bad] = verify(signed.replace(b'<IdBord V="1000"/>', b'<IdBord V="1003"/>'), trusted=pki.trusted)
    assert not bad.intact


def test_garbled_signature_parts_are_reported_not_raised(pki, pes3):
    signed = sign_pes(pes3, pki.seal)
    root = etree.fromstring(signed)
    sigs = root.findall(f".//{{{DS}}}Signature")
    sigs[0].find(f"{{{DS}}}SignatureValue").text = "!!! pas du base64 !!!"
    sigs[1].find(f".//{{{DS}}}X509Certificate").text = "AAAA"
    sigs[2].remove(sigs[2].find(f"{{{DS}}}SignedInfo"))
    first, second, third = verify(etree.tostring(root, encoding="ISO-8859-1"), trusted=pki.trusted)
    assert not first.intact and "signature value" in " ".join(first.errors)
    assert not second.intact and "cannot be read" in " ".join(second.errors)
    assert not third.intact and "no SignedInfo" in " ".join(third.errors)

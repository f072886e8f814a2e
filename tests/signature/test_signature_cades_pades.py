"""CAdES detached and PAdES: round trips checked by openssl cms and pyHanko's validator, tampering, bad input."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from io import BytesIO

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from flowbus.errors import PermanentError
from flowbus.outbound import LOOPBACK, OutboundPolicy
from flowbus.signature.cades import sign_cades
from flowbus.signature.pades import VisibleSignature, make_test_pdf, sign_pdf
from flowbus.signature.tsa_sim import TsaSimulator
from flowbus.signature.verify import verify

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would


def openssl_cms_verify(tmp_path, signature: bytes, content: bytes, ca) -> subprocess.CompletedProcess:
    (tmp_path / "file.p7s").write_bytes(signature)
    (tmp_path / "file.bin").write_bytes(content)
    return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "file.p7s"),
                           "-content", str(tmp_path / "file.bin"), "-CAfile", str(ca), "-out", os.devnull],
                          capture_output=True, text=True, timeout=30)


def pyhanko_bottom_line(pdf: bytes, pki) -> bool:
    root = asn1_x509.Certificate.load(pki.ca.certificate.public_bytes(serialization.Encoding.DER))
    context = ValidationContext(trust_roots=[root], allow_fetching=False)
    [embedded] = PdfFileReader(BytesIO(pdf)).embedded_signatures
    return validate_pdf_signature(embedded, signer_validation_context=context).bottom_line


# ---- CAdES ----------------------------------------------------------------------------------------


def test_cades_round_trip_and_one_byte_tamper(pki, tmp_path):
    content = os.urandom(1024 * 1024)  # a binary file
    p7s = sign_cades(content, pki.seal)
    assert openssl_cms_verify(tmp_path, p7s, content, pki.ca_pem).returncode == 0
    [result] = verify(content, detached=p7s, trusted=pki.trusted)
    assert result.ok and result.format == "cades" and result.chain_status == "trusted"
    assert result.signer == "Cachet serveur — Commune de Démo"
    assert abs(result.signed_at - datetime.now(UTC)) < timedelta(minutes=5)
    tampered = bytearray(content)
    tampered[123456] ^= 0x01
    assert openssl_cms_verify(tmp_path, p7s, bytes(tampered), pki.ca_pem).returncode != 0
    [bad] = verify(bytes(tampered), detached=p7s, trusted=pki.trusted)
    assert not bad.intact and not bad.ok
    assert "altered" in bad.errors[0]


def test_cades_signing_certificate_v2_and_signing_time(pki):
    from asn1crypto import cms
    info = cms.ContentInfo.load(sign_cades(b"x", pki.signer))
    attrs = {a["type"].native for a in info["content"]["signer_infos"][0]["signed_attrs"]}
    assert {"signing_time", "signing_certificate_v2", "message_digest", "content_type"} <= attrs
    assert info["content"]["encap_content_info"]["content"].native is None  # detached


def test_cades_timestamped_and_bad_inputs(pki):
    with TsaSimulator(pki.tsa) as url:
        p7s = sign_cades(b"contenu", pki.seal, tsa_url=url, outbound=LOOPBACK_POLICY)
    from asn1crypto import cms
    unsigned = cms.ContentInfo.load(p7s)["content"]["signer_infos"][0]["unsigned_attrs"]
    assert [a["type"].native for a in unsigned] == ["signature_time_stamp_token"]
    assert verify(b"contenu", detached=p7s, trusted=pki.trusted)[0].ok
    with pytest.raises(PermanentError, match="expired"):
        sign_cades(b"x", pki.expired)
    with pytest.raises(PermanentError) as err:
        verify(b"contenu", detached=b"not a signature")
    assert err.value.field == "signature"
    with pytest.raises(PermanentError, match="unrecognised"):
        verify(b"\x00\x01binary without signature")


# ---- PAdES ----------------------------------------------------------------------------------------


def test_pades_round_trip_visible_block_and_tamper(pki, pdf5):
    signed = sign_pdf(pdf5, pki.signer, visible=VisibleSignature(page=-1), reason="Approbation")
    assert signed.startswith(pdf5)  # incremental update: the original bytes are kept
    assert pyhanko_bottom_line(signed, pki)
    [result] = verify(signed, trusted=pki.trusted)
    assert result.ok and result.format == "pades" and result.signer == "Marie Dupont"
    assert result.reference == "Signature1"
    # The visible block is on the last page with the French text.
    reader = PdfFileReader(BytesIO(signed))
    [embedded] = reader.embedded_signatures
    last_page = reader.root["/Pages"]["/Kids"][4]
    assert any(annot.get_object() == embedded.sig_field for annot in last_page["/Annots"])
    assert "/Annots" not in reader.root["/Pages"]["/Kids"][0]
    fonts = _appearance_fonts(embedded.sig_field["/AP"]["/N"])
    assert fonts and all(_embedded(f) for f in fonts), "every font of the block is embedded (PDF/A)"
    assert all("DejaVuSans" in str(f["/BaseFont"]) for f in fonts), [str(f["/BaseFont"]) for f in fonts]
    to_unicode = b"".join(f["/ToUnicode"].get_object().data for f in fonts if "/ToUnicode" in f)
    for char in "Signé par Marie Dupont":
        assert f"<{ord(char):04X}>".encode() in to_unicode.upper(), char
    # One byte of page text changed (inside the signed byte range).
    at = signed.index(b"stream\n") + 30
    tampered = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1:]
    assert not pyhanko_bottom_line(tampered, pki)
    [bad] = verify(tampered, trusted=pki.trusted)
    assert not bad.intact and not bad.ok


def test_pades_b_t_with_a_timestamp_authority(pki, pdf5):
    with TsaSimulator(pki.tsa) as url:
        signed = sign_pdf(pdf5, pki.seal, tsa_url=url, outbound=LOOPBACK_POLICY)
    reader = PdfFileReader(BytesIO(signed))
    status = validate_pdf_signature(reader.embedded_signatures[0], signer_validation_context=ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(pki.ca.certificate.public_bytes(serialization.Encoding.DER))]))
    assert status.bottom_line and status.timestamp_validity is not None and status.timestamp_validity.valid
    [result] = verify(signed, trusted=pki.trusted)
    assert result.ok
    assert result.signed_at == status.timestamp_validity.timestamp


def test_pades_refuses_encrypted_and_broken_pdfs(pki, pdf5):
    writer = copy_into_new_writer(PdfFileReader(BytesIO(pdf5)))
    writer.encrypt("owner-secret", "user-secret")
    out = BytesIO()
    writer.write(out)
    with pytest.raises(PermanentError, match="mot de passe d'ouverture") as err:
        sign_pdf(out.getvalue(), pki.seal)
    assert err.value.field == "document"
    with pytest.raises(PermanentError, match="expired"):
        sign_pdf(pdf5, pki.expired)
    with pytest.raises(PermanentError):
        sign_pdf(b"%PDF-1.7\n garbage with no xref", pki.seal)
    assert verify(make_test_pdf(2)) == []  # unsigned PDF: no signature found


def test_signing_time_follows_the_injected_clock(pki, pdf5):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
    [pades] = verify(sign_pdf(pdf5, pki.seal, now=when))
    assert pades.signed_at == when and pades.chain_status == "unknown" and pades.ok
    [cades] = verify(b"data", detached=sign_cades(b"data", pki.seal, now=when))
    assert cades.signed_at == when
    # Judged three years later, the seal certificate has expired.
    [late] = verify(b"data", detached=sign_cades(b"data", pki.seal, now=when), now=when + timedelta(days=3 * 365))
    assert late.chain_status == "expired" and late.intact and not late.ok


def test_pades_detects_a_page_replaced_after_signing(pki, pdf5):
    """An incremental update that swaps a page's content is not an allowed change: not intact."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    signed = sign_pdf(pdf5, pki.signer)
    writer = IncrementalPdfFileWriter(BytesIO(signed))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page["/Contents"] = writer.add_object(generic.StreamObject(stream_data=b"BT /F1 30 Tf 100 500 Td (ANNULE) Tj ET"))
    writer.update_container(page)
    out = BytesIO()
    writer.write(out)
    assert out.getvalue().startswith(signed)  # the signed bytes themselves are untouched
    [result] = verify(out.getvalue(), trusted=pki.trusted)
    assert not result.intact and not result.ok
    assert "modified after signing" in result.errors[0]
    assert not pyhanko_bottom_line(out.getvalue(), pki)


@pytest.mark.parametrize("attached", [False, True])
def test_accepts_cms_made_by_openssl(pki, tmp_path, attached):
    """Detached (.p7s) and attached (.p7m) CMS made by other software verify; altered content does not."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = pki.signer
    (tmp_path / "cert.pem").write_bytes(key.certificate.public_bytes(Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                     NoEncryption()))
    content = b"Arrete n 2026-042\x00\xff" * 1000
    (tmp_path / "content.bin").write_bytes(content)
    done = subprocess.run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-in", str(tmp_path / "content.bin"),
                           "-signer", str(tmp_path / "cert.pem"), "-inkey", str(tmp_path / "key.pem"),
                           "-outform", "DER", "-out", str(tmp_path / "sig.der"), *(["-nodetach"] if attached else [])],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    signature = (tmp_path / "sig.der").read_bytes()
    if attached:
        [result] = verify(signature, trusted=pki.trusted)
        assert result.reference == "encapsulated content"
        at = signature.index(b"2026-042")
        [bad] = verify(signature[:at] + b"2026-043" + signature[at + 8:], trusted=pki.trusted)
    else:
        [result] = verify(content, detached=signature, trusted=pki.trusted)
        [bad] = verify(content.replace(b"042", b"043", 1), detached=signature, trusted=pki.trusted)
    assert result.ok and result.signer == "Marie Dupont" and result.chain_status == "trusted"
    assert result.signed_at is not None
    assert not bad.intact and not bad.ok


def test_der_ending_with_a_whitespace_byte_is_read_whole(pki):
    """A DER signature whose last byte is 0x20 or 0x0a must not be 'stripped' (a real, random-looking bug)."""
    from asn1crypto import cms

    from flowbus.signature.cades import load_cms

    for attempt in range(2000):
        p7s = sign_cades(b"x" * attempt, pki.seal)
        if p7s[-1:] in (b" ", b"\n", b"\r", b"\t"):
            break
    else:  # pragma: no cover - 2000 tries without such a byte is (1-4/256)^2000 ≈ 2e-14
        raise AssertionError("no signature ending with a whitespace byte")
    assert load_cms(p7s).dump() == cms.ContentInfo.load(p7s).dump()
    assert verify(b"x" * attempt, detached=p7s)[0].intact


def _appearance_fonts(stream) -> list:
    """Every font an appearance stream uses, its nested form XObjects and Type0 descendants included."""
    found, todo, seen = [], [stream], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        resources = obj.get("/Resources") if hasattr(obj, "get") else None
        if resources is None:
            continue
        resources = resources.get_object() if hasattr(resources, "get_object") else resources
        for font in (resources.get("/Font") or {}).values():
            font = font.get_object()
            found.extend(d.get_object() for d in font.get("/DescendantFonts", [])) if "/DescendantFonts" in font \
                else None
            found.append(font)
        for xobject in (resources.get("/XObject") or {}).values():
            todo.append(xobject.get_object())
    return found


def _embedded(font) -> bool:
    if "/DescendantFonts" in font:
        return all(_embedded(d.get_object()) for d in font["/DescendantFonts"])
    descriptor = font.get("/FontDescriptor")
    return descriptor is not None and any(k in descriptor.get_object() for k in ("/FontFile", "/FontFile2",
                                                                                 "/FontFile3"))


def _protected(pdf: bytes, *, user: str, perms=None) -> bytes:
    from pyhanko.pdf_utils.crypt import StandardSecurityHandler
    writer = copy_into_new_writer(PdfFileReader(BytesIO(pdf)))
    kwargs = {"perms": perms} if perms is not None else {}
    writer._assign_security_handler(StandardSecurityHandler.build_from_pw("proprietaire", desired_user_pass=user,
                                                                          **kwargs))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_with_only_an_owner_password_is_signed(pki, pdf5):
    protected = _protected(pdf5, user="")
    assert PdfFileReader(BytesIO(protected)).encrypted
    signed = sign_pdf(protected, pki.signer, visible=VisibleSignature(page=0))
    assert signed.startswith(protected)
    [result] = verify(signed, trusted=pki.trusted)
    assert result.ok and result.signer == "Marie Dupont"
    reader = PdfFileReader(BytesIO(signed))
    assert reader.encrypted and reader.decrypt("").status.name in ("USER", "OWNER"), "still opens without a password"


def test_a_pdf_whose_author_forbids_form_filling_is_refused_in_french(pki, pdf5):
    from pyhanko.pdf_utils.crypt.permissions import StandardPermissions
    locked = _protected(pdf5, user="", perms=StandardPermissions.ALLOW_PRINTING)
    with pytest.raises(PermanentError, match="interdit le remplissage de formulaires"):
        sign_pdf(locked, pki.seal)

"""PAdES with pyHanko: baseline B-B, B-T when a timestamp authority is configured, optional visible block.

The visible block reads « Signé par <signer> le <date> » on the page and at the place asked
for, in DejaVu Sans embedded as a subset (``fonts/``): a signed PDF/A keeps every font embedded.
A PDF protected by an owner password only (it opens without one) is signed within the permissions
its author set; a PDF that needs a password to open is refused.  ``make_test_pdf`` writes a small
multi-page PDF for tests, benchmarks and the demo.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.validation.pdf_embedded import async_validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko.pdf_utils.crypt import AuthStatus
from pyhanko.pdf_utils.crypt.permissions import StandardPermissions
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator import ValidationContext

from flowbus.errors import PermanentError, TransientError
from flowbus.outbound import STRICT, OutboundPolicy
from flowbus.signature.base import Verification, subject_cn
from flowbus.signature.cades import pyhanko_signer, run_sync, timestamper
from flowbus.signature.etsi import SubIndication
from flowbus.signature.keys import SigningKey, check_validity


FONT = Path(__file__).with_name("fonts") / "DejaVuSans.ttf"  # embedded as a subset in every visible block


@dataclass(frozen=True)
class VisibleSignature:
    """Where to draw the signature block: page index (negative counts from the end) and box in points."""

    page: int = -1
    box: tuple[int, int, int, int] = (340, 40, 560, 100)


class _ClockedPdfSigner(signers.PdfSigner):
    """pyHanko's PdfSigner with the signing time (the /M entry, the visible block) taken from ``now``."""

    def __init__(self, *args: object, now: datetime | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def init_signing_session(self, pdf_out, existing_fields_only=False):  # noqa: ANN001 (pyHanko's signature)
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        if self._now is not None:
            session.system_time = self._now
        return session


def _open(data: bytes, field_name: str = "document") -> PdfFileReader:
    if b"%PDF-" not in data[:1024]:  # the header may follow up to 1 KB of junk (ISO 32000 readers accept it)
        raise PermanentError("the file is not a PDF (no %PDF header)", field=field_name)
    try:
        reader = PdfFileReader(BytesIO(data), strict=False)
    except (PdfError, ValueError, KeyError, IndexError) as exc:
        raise PermanentError(f"the PDF cannot be read: {exc}", field=field_name,
                             hint="re-export the document as PDF") from None
    if reader.encrypted:
        _open_protected(reader, field_name)
    return reader


def _open_protected(reader: PdfFileReader, field_name: str) -> None:
    """A PDF protected by an owner password only opens with the empty user password: sign it if its author let
    forms be filled (a signature is a form field); one that needs a password to open is refused."""
    try:
        result = reader.decrypt("")
    except (PdfError, ValueError, KeyError, NotImplementedError) as exc:
        raise PermanentError(f"Le PDF est chiffré d'une manière que flowbus ne sait pas ouvrir : {exc}",
                             field=field_name, hint="demandez un PDF sans protection") from None
    if result.status not in (AuthStatus.USER, AuthStatus.OWNER):
        raise PermanentError("Le PDF est protégé par un mot de passe d'ouverture : il ne peut pas être signé tel quel.",
                             field=field_name, hint="demandez un PDF sans mot de passe, ou retirez la protection")
    allowed = StandardPermissions.ALLOW_FORM_FILLING | StandardPermissions.ALLOW_ANNOTS_FORM_FILLING
    if result.permission_flags is not None and not result.permission_flags & allowed:
        raise PermanentError("Le PDF interdit le remplissage de formulaires (réglage de son auteur) : il ne peut "
                             "pas recevoir de signature.", field=field_name,
                             hint="demandez à son auteur un PDF sans cette restriction")


def sign_pdf(data: bytes, key: SigningKey, *, now: datetime | None = None, tsa_url: str | None = None,
             visible: VisibleSignature | None = None, reason: str | None = None,
             location: str | None = None, field_name: str | None = None,
             outbound: OutboundPolicy = STRICT) -> bytes:
    """Sign ``data`` as PAdES B-B (B-T with ``tsa_url``), as an incremental update.

    Raises:
        PermanentError: not a PDF, unreadable or encrypted PDF, expired certificate.
        TransientError: the timestamp authority could not be reached.
    """
    check_validity(key.certificate, now)
    reader = _open(data)
    try:
        page_count = int(reader.root["/Pages"]["/Count"])
        existing = {s.field_name for s in reader.embedded_signatures}
    except Exception as exc:  # pyHanko parses lazily: a damaged object shows up here
        raise PermanentError(f"the PDF cannot be read: {exc}", field="document",
                             hint="re-export the document as PDF") from None
    name = field_name or next(f"Signature{i}" for i in range(1, 1000) if f"Signature{i}" not in existing)
    meta = signers.PdfSignatureMetadata(
        field_name=name, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason, location=location, name=key.subject)
    stamp = None
    field_spec = None
    if visible is not None:
        page = visible.page if visible.page >= 0 else page_count + visible.page
        if not 0 <= page < page_count:
            raise PermanentError(f"page {visible.page} does not exist (the PDF has {page_count} pages)",
                                 field="page")
        field_spec = fields.SigFieldSpec(sig_field_name=name, on_page=page, box=visible.box)
        stamp = TextStampStyle(stamp_text="Signé par %(signer)s\nle %(ts)s",
                               timestamp_format="%d/%m/%Y à %H:%M %Z", border_width=1,
                               text_box_style=TextBoxStyle(font=GlyphAccumulatorFactory(str(FONT))))

    def attempt(reserved: int | None) -> bytes:
        try:
            writer = IncrementalPdfFileWriter(BytesIO(data), strict=False)
            if writer.prev.encrypted:  # owner password only (checked by _open): the update is encrypted alike
                writer.encrypt("")
        except (PdfError, ValueError, KeyError) as exc:
            raise PermanentError(f"the PDF cannot be updated: {exc}", field="document") from None
        pdf_signer = _ClockedPdfSigner(meta, signer=pyhanko_signer(key), timestamper=timestamper(tsa_url, outbound),
                                       stamp_style=stamp, new_field_spec=field_spec, now=now)
        out = BytesIO()
        run_sync(pdf_signer.async_sign_pdf(writer, output=out, bytes_reserved=reserved,
                                           appearance_text_params={"signer": key.subject}))
        return out.getvalue()

    # Without a timestamp the CMS size is known (signed attributes + certificates): reserving room
    # for it skips pyHanko's size estimation, a whole dry-run signature.  With a timestamp the
    # token's size is the TSA's business, so pyHanko estimates.
    certs_size = sum(len(c.public_bytes(Encoding.DER)) for c in (key.certificate, *key.chain))
    reserved = None if tsa_url else 2 * (certs_size + 2048)  # hex digits: two per byte
    try:
        try:
            return attempt(reserved)
        except SigningError:
            if reserved is None:
                raise
            return attempt(None)  # the guess was too small: let pyHanko measure
    except SigningError as exc:
        raise PermanentError(f"PAdES signing failed: {exc}", field="document") from exc
    except OSError as exc:
        raise TransientError(f"the timestamp authority {tsa_url} is unreachable: {exc}", field="tsa_url") from exc


def verify_pdf(data: bytes, *, trusted: list[x509.Certificate] | None = None,
               now: datetime | None = None) -> list[Verification]:
    """Check every signature embedded in the PDF (empty list: none).

    A signature is intact when its byte range digest and value match and nothing but
    allowed updates (form filling, validation data, timestamps) was added after it.
    """
    reader = _open(data)
    try:
        embedded_signatures = list(reader.embedded_signatures)
    except Exception as exc:  # pyHanko parses lazily: a damaged object shows up here
        raise PermanentError(f"the PDF's signature fields cannot be read: {exc}", field="document") from None
    results = []
    for embedded in embedded_signatures:
        try:
            results.append(_check(embedded, trusted, now))
        except Exception as exc:  # a damaged signature is a verdict, not a crash
            damaged = Verification("pades", None, None, "unknown", False, reference=embedded.field_name)
            damaged.problem(SubIndication.FORMAT_FAILURE, f"the signature cannot be read: {exc}")
            results.append(damaged)
    return results


def _check(embedded, trusted: list[x509.Certificate] | None, now: datetime | None) -> Verification:  # noqa: ANN001
    # pyHanko is used for integrity only: the chain is judged by Verification.judge_chain() below,
    # the same way for every format.  Giving it the embedded certificates as roots keeps its path
    # building from failing (and logging errors) on chains we judge ourselves.
    roots = [embedded.signer_cert, *embedded.other_embedded_certs, *_asn1(trusted or [])]
    context = ValidationContext(trust_roots=roots, allow_fetching=False, moment=now)
    status = run_sync(async_validate_pdf_signature(embedded, signer_validation_context=context))
    cert = x509.load_der_x509_certificate(status.signing_cert.dump())
    others = [x509.load_der_x509_certificate(c.dump()) for c in embedded.other_embedded_certs]
    result = Verification("pades", subject_cn(cert), None, "unknown", False, reference=embedded.field_name,
                          certificate=cert)
    if not status.intact:
        result.problem(SubIndication.HASH_FAILURE,
                       "the byte-range digest does not match: the signed content was altered")
    if not status.valid:
        result.problem(SubIndication.SIG_CRYPTO_FAILURE, "the signature value does not match the signer's certificate")
    modified = (status.coverage != SignatureCoverageLevel.ENTIRE_FILE
                and not (status.docmdp_ok or status.modification_level is None))
    if modified:
        # The signed revision itself is intact: what fails is the constraint the signature puts on later
        # changes (DocMDP / allowed incremental updates).
        result.problem(SubIndication.SIG_CONSTRAINTS_FAILURE,
                       "the PDF was modified after signing in a way the signature does not allow")
    signed_at = None
    if status.timestamp_validity is not None:
        signed_at = status.timestamp_validity.timestamp
        if not (status.timestamp_validity.intact and status.timestamp_validity.valid):
            result.problem(SubIndication.SIG_CONSTRAINTS_FAILURE, "the signature timestamp is not valid")
    elif status.signer_reported_dt is not None:
        signed_at = status.signer_reported_dt
    if signed_at is not None and signed_at.tzinfo is None:
        signed_at = signed_at.replace(tzinfo=UTC)
    result.signed_at = signed_at
    result.judge_chain(cert, others, trusted, now)
    result.intact = status.intact and status.valid and not modified
    return result


def _asn1(certs: list[x509.Certificate]):
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import serialization
    for cert in certs:
        yield asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def make_test_pdf(pages: int = 3, title: str = "Délibération du conseil municipal") -> bytes:
    """A small valid PDF with ``pages`` pages of text (Helvetica, WinAnsi), compressed streams."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for number in range(1, pages + 1):
        lines = [title, f"Page {number} / {pages}", ""]
        lines += [f"Article {number}.{i} — le conseil municipal, après en avoir délibéré, décide."
                  for i in range(1, 31)]
        text = b"BT /F1 11 Tf 56 780 Td 14 TL " + b" ".join(
            b"(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("cp1252") + b") '"
            for line in lines) + b" ET"
        stream = zlib.compress(text)
        content = add(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_obj, content, font)))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
                              + b"] /Count %d >>" % pages)
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog, xref)
    return bytes(out)

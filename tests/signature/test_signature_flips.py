"""Single-bit flips over signed files: a verdict or a PermanentError, never a crash, never 'ok' inside signed bytes."""

from __future__ import annotations

import random
from io import BytesIO

from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from lxml import etree
from pyhanko.pdf_utils.reader import PdfFileReader

from flowbus.errors import PermanentError
from flowbus.signature.cades import sign_cades
from flowbus.signature.pades import sign_pdf
from flowbus.signature.verify import verify
from flowbus.signature.xades import DS, sign_pes


def flipped(data: bytes, rng: random.Random, count: int):
    for _ in range(count):
        at = rng.randrange(len(data))
        yield at, data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]


def verdict(data: bytes, **kwargs) -> bool | None:
    """True: every signature ok; False: some signature not ok; None: refused as unreadable."""
    try:
        results = verify(data, **kwargs)
    except PermanentError:
        return None
    return bool(results) and all(r.ok for r in results)


def test_xades_flips(pki, pes3):
    signed = sign_pes(pes3, pki.seal)
    # Signed bytes: each Bordereau without its ds:Signature, and each SignedProperties element.
    root = etree.fromstring(signed)
    spans = []
    text = signed
    for bord_id in [b.get("Id") for b in root.findall(".//Bordereau")]:
        start = text.index(f'<Bordereau Id="{bord_id}"'.encode())
        spans.append((start, text.index(b"<ds:Signature", start)))
    for sig in root.iter(f"{{{DS}}}Signature"):
        start = text.index(f'<xad:SignedProperties Id="{sig.get("Id")}_SP"'.encode())
        spans.append((start, text.index(b"</xad:SignedProperties>", start)))
    for at, data in flipped(signed, random.Random(7), 250):
        ok = verdict(data, trusted=pki.trusted)
        if any(a <= at < b for a, b in spans):
            assert ok is not True, f"flip at {at} inside signed content went unnoticed"


def test_pades_flips(pki, pdf5):
    signed = sign_pdf(pdf5, pki.seal)
    offset, first, second, length = PdfFileReader(BytesIO(signed)).embedded_signatures[0].byte_range
    for at, data in flipped(signed, random.Random(8), 150):
        ok = verdict(data, trusted=pki.trusted)
        if offset <= at < offset + first or second <= at < second + length:
            assert ok is not True, f"flip at {at} inside the byte range went unnoticed"


def test_cades_flips(pki):
    content = bytes(range(256)) * 40
    p7s = sign_cades(content, pki.seal)
    signer_info = cms.ContentInfo.load(p7s)["content"]["signer_infos"][0]
    leaf = pki.seal.certificate.public_bytes(serialization.Encoding.DER)
    attrs = signer_info["signed_attrs"].dump()[2:]  # the [0] IMPLICIT header differs from the SET's
    value = signer_info["signature"].dump()
    # Bound to the signature: the signer's certificate, the signed attributes, the signature value.
    spans = [(p7s.index(part), p7s.index(part) + len(part)) for part in (leaf, attrs, value)]
    for at, data in flipped(p7s, random.Random(9), 300):
        ok = verdict(content, detached=data, trusted=pki.trusted)
        if any(a <= at < b for a, b in spans):
            assert ok is not True, f"flip at {at} in signed parts went unnoticed"
    for at, data in flipped(content, random.Random(10), 50):
        assert verdict(data, detached=p7s, trusted=pki.trusted) is False

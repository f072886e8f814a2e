"""XAdES for PES V2: one enveloped signature per Bordereau under the DGFiP Hélios policy; verify any XML-DSig.

The shape follows the signatures DGFiP and the collectivités' software produce (see the
Hélios reference, §2.3): ``ds:Signature`` appended as last child of each ``Bordereau``;
``SignedInfo`` canonicalised with exclusive C14N, ``rsa-sha256``; two references — the
Bordereau (``#Id``, transforms enveloped-signature + exc-c14n) and the XAdES
``SignedProperties`` (``#<sigId>_SP``, exc-c14n, namespace ``http://uri.etsi.org/01903/v1.1.1#``)
holding SigningTime, SigningCertificate, the Hélios SignaturePolicyIdentifier, and optionally
SignatureProductionPlace and SignerRole.  The file keeps its declared encoding (PES files are
ISO-8859-1) and its XML declaration byte for byte.

Verification is generic XML-DSig (enveloped or not, exclusive or inclusive C14N 1.0,
RSA/ECDSA with SHA-1/256/384/512) plus the XAdES checks (signed properties referenced,
signing certificate digest), so PES files signed by other software verify too.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree

from flowbus.errors import PermanentError
from flowbus.signature.base import Verification, pick_leaf, subject_cn
from flowbus.signature.etsi import SubIndication
from flowbus.signature.keys import SigningKey, check_validity

DS = "http://www.w3.org/2000/09/xmldsig#"
XAD = "http://uri.etsi.org/01903/v1.1.1#"
XAD_NAMESPACES = (XAD, "http://uri.etsi.org/01903/v1.2.2#", "http://uri.etsi.org/01903/v1.3.2#")
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"

# DGFiP Hélios signature policy (reference §2.3; Pastell HeliosSignatureLocale.php).
HELIOS_POLICY_ID = "urn:oid:1.2.250.1.131.1.5.18.21.1.7"
HELIOS_POLICY_DESCRIPTION = "Politique de signature Helios de la DGFiP"
HELIOS_POLICY_HASH = "roF9+cfRHNPtVJolhdqfIqGMVuUXX8aR4rpiquf0u5E="
HELIOS_POLICY_URI = ("https://www.collectivites-locales.gouv.fr/files/files/finances_locales/"
                     "dematerialisation/ps_helios_dgfip.pdf")

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "http://www.w3.org/2000/09/xmldsig#sha1": hashes.SHA1,
    SHA256_URI: hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmlenc#sha512": hashes.SHA512,
}
SIGNATURE_METHODS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1),
    RSA_SHA256: ("rsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512),
    ECDSA_SHA256: ("ecdsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ecdsa", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": ("ecdsa", hashes.SHA512),
}

_DECLARATION = re.compile(rb"^(\xef\xbb\xbf)?\s*<\?xml[^>]*\?>")


def _parser() -> etree.XMLParser:
    # No DTD, no entities, no network: PES files come from outside.
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, load_dtd=False)


def parse_xml(data: bytes) -> etree._ElementTree:
    """Parse ``data``; malformed XML raises PermanentError naming the line."""
    try:
        return etree.ElementTree(etree.fromstring(data, _parser()))
    except etree.XMLSyntaxError as exc:
        raise PermanentError(f"the XML document is malformed: {exc.msg} (line {exc.lineno})", field="document",
                             hint="fix the file so that it is well-formed XML") from None


def _b64(data: bytes) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def _c14n(element: etree._Element, algorithm: str = EXC_C14N, prefixes: list[str] | None = None) -> bytes:
    with_comments = algorithm.endswith("#WithComments")
    base = algorithm.removesuffix("#WithComments")
    if base == EXC_C14N:
        return etree.tostring(element, method="c14n", exclusive=True, with_comments=with_comments,
                              inclusive_ns_prefixes=prefixes or None)
    if base in (C14N, C14N11):
        # C14N 1.1 differs from 1.0 only for inherited xml:id/xml:base, which PES do not carry.
        return etree.tostring(element, method="c14n", exclusive=False, with_comments=with_comments)
    raise ValueError(f"unsupported canonicalization {algorithm}")


def _digest(data: bytes, algorithm: type[hashes.HashAlgorithm] = hashes.SHA256) -> bytes:
    h = hashes.Hash(algorithm())
    h.update(data)
    return h.finalize()


def _sub(parent: etree._Element, ns: str, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _bordereaux(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str) and _local(el) == "Bordereau"]


def _signature_time(now: datetime | None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _sign_bytes(key: SigningKey, data: bytes) -> bytes:
    raw = key.sign(data, hashes.SHA256())
    if key.is_rsa:
        return raw
    # XML-DSig ECDSA values are r || s, each as wide as the curve's order (RFC 4050).
    r, s = decode_dss_signature(raw)
    size = (key.private_key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sign_pes(xml: bytes, key: SigningKey, *, now: datetime | None = None, role: str | None = None,
             city: str | None = None, postal_code: str | None = None, country: str | None = None) -> bytes:
    """Sign every ``Bordereau`` of a PES_Aller with an enveloped XAdES signature (Hélios policy).

    Returns the signed file in its original encoding.

    Raises:
        PermanentError: malformed XML, not a PES_Aller, no Bordereau, a Bordereau without
            ``Id`` (the message names its position) or already signed, an expired certificate.
    """
    check_validity(key.certificate, now)
    tree = parse_xml(xml)
    root = tree.getroot()
    if _local(root) != "PES_Aller":
        raise PermanentError(f"the XML root element is {_local(root)!r}, not PES_Aller", field="document",
                             hint="only PES_Aller files are signed per bordereau")
    bordereaux = _bordereaux(root)
    if not bordereaux:
        raise PermanentError("the PES_Aller holds no Bordereau to sign", field="document")
    for position, bord in enumerate(bordereaux, start=1):
        parent = _local(bord.getparent()) if bord.getparent() is not None else "?"
        if not bord.get("Id"):
            raise PermanentError(
                f"Bordereau #{position} (in {parent}) has no Id attribute; the Hélios policy signs each "
                f"bordereau by its Id", field="document", hint="have the finance software set Bordereau/@Id")
        if bord.find(f"{{{DS}}}Signature") is not None:
            raise PermanentError(f"Bordereau #{position} (Id {bord.get('Id')!r}) is already signed",
                                 field="document")
    ids = [el.get("Id") for el in root.iter() if isinstance(el.tag, str) and el.get("Id")]
    for position, bord in enumerate(bordereaux, start=1):
        if ids.count(bord.get("Id")) > 1:
            raise PermanentError(f"Bordereau #{position}: Id {bord.get('Id')!r} is used more than once in the file; "
                                 f"a signature reference must point to one element", field="document")
    signing_time = _signature_time(now)
    for bord in bordereaux:
        _sign_bordereau(bord, key, signing_time, role, city, postal_code, country)
    return _serialise(xml, tree)


def _sign_bordereau(bord: etree._Element, key: SigningKey, signing_time: str, role: str | None,
                    city: str | None, postal_code: str | None, country: str | None) -> None:
    # Digest before appending the signature: the same bytes the enveloped-signature transform yields.
    bord_digest = _digest(_c14n(bord))
    sig_id = "IDS" + uuid.uuid4().hex
    cert = key.certificate
    sig = etree.SubElement(bord, f"{{{DS}}}Signature", {"Id": sig_id}, nsmap={"ds": DS})
    signed_info = _sub(sig, DS, "SignedInfo")
    _sub(signed_info, DS, "CanonicalizationMethod", Algorithm=EXC_C14N)
    _sub(signed_info, DS, "SignatureMethod", Algorithm=RSA_SHA256 if key.is_rsa else ECDSA_SHA256)
    ref = _sub(signed_info, DS, "Reference", URI=f"#{bord.get('Id')}")
    transforms = _sub(ref, DS, "Transforms")
    _sub(transforms, DS, "Transform", Algorithm=ENVELOPED)
    _sub(transforms, DS, "Transform", Algorithm=EXC_C14N)
    _sub(ref, DS, "DigestMethod", Algorithm=SHA256_URI)
    _sub(ref, DS, "DigestValue", base64.b64encode(bord_digest).decode())
    sp_ref = _sub(signed_info, DS, "Reference", URI=f"#{sig_id}_SP", Type=f"{XAD}SignedProperties")
    _sub(_sub(sp_ref, DS, "Transforms"), DS, "Transform", Algorithm=EXC_C14N)
    _sub(sp_ref, DS, "DigestMethod", Algorithm=SHA256_URI)
    sp_digest_el = _sub(sp_ref, DS, "DigestValue")
    sig_value = _sub(sig, DS, "SignatureValue", Id=f"{sig_id}_SV")
    x509_data = _sub(_sub(sig, DS, "KeyInfo", Id=f"{sig_id}_KI"), DS, "X509Data")
    for c in (cert, *[c for c in key.chain if c.subject != c.issuer]):
        _sub(x509_data, DS, "X509Certificate", _b64(c.public_bytes(serialization.Encoding.DER)))
    obj = _sub(sig, DS, "Object", Id=f"{sig_id}_QI")
    qp = etree.SubElement(obj, f"{{{XAD}}}QualifyingProperties", {"Target": f"#{sig_id}"}, nsmap={"xad": XAD})
    sp = _sub(qp, XAD, "SignedProperties", Id=f"{sig_id}_SP")
    ssp = _sub(sp, XAD, "SignedSignatureProperties")
    _sub(ssp, XAD, "SigningTime", signing_time)
    cert_el = _sub(_sub(ssp, XAD, "SigningCertificate"), XAD, "Cert")
    cert_digest = _sub(cert_el, XAD, "CertDigest")
    _sub(cert_digest, XAD, "DigestMethod", Algorithm=SHA256_URI)
    _sub(cert_digest, XAD, "DigestValue",
         base64.b64encode(_digest(cert.public_bytes(serialization.Encoding.DER))).decode())
    issuer_serial = _sub(cert_el, XAD, "IssuerSerial")
    _sub(issuer_serial, DS, "X509IssuerName", cert.issuer.rfc4514_string())
    _sub(issuer_serial, DS, "X509SerialNumber", str(cert.serial_number))
    policy_id = _sub(_sub(ssp, XAD, "SignaturePolicyIdentifier"), XAD, "SignaturePolicyId")
    sig_policy_id = _sub(policy_id, XAD, "SigPolicyId")
    _sub(sig_policy_id, XAD, "Identifier", HELIOS_POLICY_ID)
    _sub(sig_policy_id, XAD, "Description", HELIOS_POLICY_DESCRIPTION)
    policy_hash = _sub(policy_id, XAD, "SigPolicyHash")
    _sub(policy_hash, XAD, "DigestMethod", Algorithm=SHA256_URI)
    _sub(policy_hash, XAD, "DigestValue", HELIOS_POLICY_HASH)
    qualifier = _sub(_sub(policy_id, XAD, "SigPolicyQualifiers"), XAD, "SigPolicyQualifier")
    _sub(qualifier, XAD, "SPURI", HELIOS_POLICY_URI)
    if city or postal_code or country:
        place = _sub(ssp, XAD, "SignatureProductionPlace")
        for tag, value in (("City", city), ("PostalCode", postal_code), ("CountryName", country)):
            if value:
                _sub(place, XAD, tag, value)
    if role:
        _sub(_sub(_sub(ssp, XAD, "SignerRole"), XAD, "ClaimedRoles"), XAD, "ClaimedRole", role)
    sp_digest_el.text = base64.b64encode(_digest(_c14n(sp))).decode()
    sig_value.text = _b64(_sign_bytes(key, _c14n(signed_info)))


def _serialise(original: bytes, tree: etree._ElementTree) -> bytes:
    encoding = tree.docinfo.encoding or "UTF-8"
    out = etree.tostring(tree, encoding=encoding, xml_declaration=True)
    match = _DECLARATION.match(original)
    produced = _DECLARATION.match(out)
    if match and produced:  # keep the original declaration (quotes, case) — S²LOW reads it literally
        out = match.group(0) + out[produced.end():]
    elif not match and produced:
        out = out[produced.end():].lstrip(b"\r\n")
    return out


# ---- verification ------------------------------------------------------------------------------


def verify_xml(data: bytes, *, trusted: list[x509.Certificate] | None = None,
               now: datetime | None = None) -> list[Verification]:
    """Check every ``ds:Signature`` in the document; an empty list means none was found.

    Raises:
        PermanentError: the document is not well-formed XML.
    """
    tree = parse_xml(data)
    root = tree.getroot()
    ids: dict[str, etree._Element] = {}
    duplicates: set[str] = set()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        value = el.get("Id")
        if value is not None:
            if value in ids:
                duplicates.add(value)
            ids[value] = el
    results = []
    for sig in list(root.iter(f"{{{DS}}}Signature")):
        try:
            results.append(_verify_signature(sig, root, ids, duplicates, trusted, now))
        except Exception as exc:  # a damaged signature is a verdict, not a crash
            damaged = Verification("xades", None, None, "unknown", False)
            damaged.problem(SubIndication.FORMAT_FAILURE, f"the signature cannot be read: {exc}")
            results.append(damaged)
    return results


@contextmanager
def _detached(sig: etree._Element) -> Iterator[None]:
    """Remove ``sig`` from its parent for the time of the block (enveloped-signature transform).

    lxml moves an element's tail text with it; the transform removes only the element, so
    the tail is handed to the previous node meanwhile.
    """
    parent = sig.getparent()
    if parent is None:
        yield
        return
    index = parent.index(sig)
    tail, sig.tail = sig.tail, None
    prev = sig.getprevious()
    saved = prev.tail if prev is not None else parent.text
    parent.remove(sig)
    if tail:
        if prev is not None:
            prev.tail = (saved or "") + tail
        else:
            parent.text = (saved or "") + tail
    try:
        yield
    finally:
        if prev is not None:
            prev.tail = saved
        else:
            parent.text = saved
        parent.insert(index, sig)
        sig.tail = tail


def _reference_bytes(ref: etree._Element, sig: etree._Element, root: etree._Element,
                     ids: dict[str, etree._Element]) -> tuple[bytes, etree._Element]:
    uri = ref.get("URI")
    if uri is None or uri == "":
        target = root
    elif uri.startswith("#xpointer(id("):
        target = ids[uri[len("#xpointer(id("):].strip("')\"")]
    elif uri.startswith("#"):
        target = ids[uri[1:]]
    else:
        raise ValueError(f"external reference {uri!r} is not supported")
    transforms = [t.get("Algorithm") or "" for t in ref.findall(f"{{{DS}}}Transforms/{{{DS}}}Transform")]
    prefixes: list[str] = []
    for t in ref.findall(f"{{{DS}}}Transforms/{{{DS}}}Transform"):
        inc = t.find(f"{{{EXC_C14N}}}InclusiveNamespaces")
        if inc is not None:
            prefixes = (inc.get("PrefixList") or "").split()
    c14n = next((t for t in reversed(transforms) if t != ENVELOPED), C14N)
    unknown = [t for t in transforms if t != ENVELOPED and t.removesuffix("#WithComments") not in
               (EXC_C14N, C14N, C14N11)]
    if unknown:
        raise ValueError(f"unsupported transform {unknown[0]}")
    if ENVELOPED in transforms and (target is sig or any(a is sig for a in target.iterancestors())):
        # The transform removes the Signature and all its descendants: nothing of ``target`` is left.
        return b"", target
    if ENVELOPED in transforms and any(el is sig for el in target.iter(f"{{{DS}}}Signature")):
        with _detached(sig):
            return _c14n(target, c14n, prefixes), target
    return _c14n(target, c14n, prefixes), target


def _verify_signature(sig: etree._Element, root: etree._Element, ids: dict[str, etree._Element],
                      duplicates: set[str], trusted: list[x509.Certificate] | None,
                      now: datetime | None) -> Verification:
    certs: list[x509.Certificate] = []
    unreadable = 0
    for c in sig.iter(f"{{{DS}}}X509Certificate"):
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode("".join((c.text or "").split())))
            cert.subject, cert.issuer, cert.public_key()  # cryptography parses these lazily
            certs.append(cert)
        except Exception:  # ValueError, binascii.Error, InvalidVersion, UnsupportedAlgorithm…
            unreadable += 1
    leaf = pick_leaf(certs)
    signed_info = sig.find(f"{{{DS}}}SignedInfo")
    result = Verification("xades", subject_cn(leaf) if leaf is not None else None, None, "unknown", False,
                          certificate=leaf)
    if unreadable:
        result.problem(SubIndication.FORMAT_FAILURE, f"{unreadable} X509Certificate value(s) cannot be read")
    if signed_info is None:
        result.problem(SubIndication.FORMAT_FAILURE, "the signature has no SignedInfo")
        return result
    # What the signature covers, for the report: the first reference that is not SignedProperties.
    sp_ids: set[str] = set()
    for sp in sig.iter():
        if isinstance(sp.tag, str) and _local(sp) == "SignedProperties" and sp.get("Id"):
            sp_ids.add(sp.get("Id"))
    references = signed_info.findall(f"{{{DS}}}Reference")
    intact = bool(references)
    if not references:
        result.problem(SubIndication.FORMAT_FAILURE, "SignedInfo holds no Reference")
    covered_sp = False
    for ref in references:
        uri = ref.get("URI") or ""
        name = uri.lstrip("#")
        if name in sp_ids:
            covered_sp = True
        elif result.reference is None:
            result.reference = name or "document"
        if name and name in duplicates:
            result.problem(SubIndication.FORMAT_FAILURE,
                           f"Id {name!r} appears more than once in the document (refused: signature wrapping)")
            intact = False
            continue
        method = ref.find(f"{{{DS}}}DigestMethod")
        algorithm = DIGESTS.get(method.get("Algorithm") if method is not None else "")
        expected = ref.findtext(f"{{{DS}}}DigestValue") or ""
        if algorithm is None:
            result.problem(SubIndication.CRYPTO_CONSTRAINTS_FAILURE, f"reference {uri!r}: unsupported digest method")
            intact = False
            continue
        try:
            content, _ = _reference_bytes(ref, sig, root, ids)
        except KeyError:
            result.problem(SubIndication.SIGNED_DATA_NOT_FOUND,
                           f"reference {uri!r}: no element with this Id in the document")
            intact = False
            continue
        except (ValueError, etree.C14NError) as exc:
            result.problem(SubIndication.SIGNED_DATA_NOT_FOUND, f"reference {uri!r}: {exc}")
            intact = False
            continue
        if base64.b64encode(_digest(content, algorithm)).decode() != "".join(expected.split()):
            result.problem(SubIndication.HASH_FAILURE,
                           f"reference {uri!r}: digest mismatch, the signed content was altered")
            intact = False
    if sp_ids and not covered_sp:
        result.problem(SubIndication.FORMAT_FAILURE, "the XAdES SignedProperties are not covered by the signature")
    # Signature value over the canonical SignedInfo.
    c14n_el = signed_info.find(f"{{{DS}}}CanonicalizationMethod")
    method_el = signed_info.find(f"{{{DS}}}SignatureMethod")
    method = SIGNATURE_METHODS.get(method_el.get("Algorithm") if method_el is not None else "")
    try:
        value = base64.b64decode("".join((sig.findtext(f"{{{DS}}}SignatureValue") or "").split()), validate=True)
    except (ValueError, binascii.Error):
        value = b""  # fails verification below, reported as a wrong signature value
    if leaf is None:
        result.problem(SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
                       "the signature carries no X509 certificate (KeyInfo/X509Data)")
        intact = False
    elif method is None:
        result.problem(SubIndication.CRYPTO_CONSTRAINTS_FAILURE, "unsupported signature method")
        intact = False
    else:
        try:
            signed_bytes = _c14n(signed_info, (c14n_el.get("Algorithm") or "") if c14n_el is not None else C14N)
            _verify_value(leaf, method, value, signed_bytes)
        except (ValueError, etree.C14NError) as exc:
            result.problem(SubIndication.SIGNED_DATA_NOT_FOUND, f"SignedInfo: {exc}")
            intact = False
        except InvalidSignature:
            result.problem(SubIndication.SIG_CRYPTO_FAILURE,
                           "the signature value does not match the signer's certificate")
            intact = False
    _xades_properties(sig, leaf, result)
    if leaf is not None:
        result.judge_chain(leaf, certs, trusted, now)
    result.intact = intact
    return result


def _verify_value(cert: x509.Certificate, method: tuple[str, type[hashes.HashAlgorithm]], value: bytes,
                  data: bytes) -> None:
    kind, algorithm = method
    public_key = cert.public_key()
    if kind == "rsa":
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignature()
        public_key.verify(value, data, padding.PKCS1v15(), algorithm())
    else:
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidSignature()
        half = len(value) // 2
        der = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
        public_key.verify(der, data, ec.ECDSA(algorithm()))


def _xades_properties(sig: etree._Element, leaf: x509.Certificate | None, result: Verification) -> None:
    for ns in XAD_NAMESPACES:
        ssp = sig.find(f".//{{{ns}}}SignedSignatureProperties")
        if ssp is None:
            continue
        when = ssp.findtext(f"{{{ns}}}SigningTime")
        if when:
            try:
                parsed = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
                result.signed_at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except ValueError:
                result.problem(SubIndication.FORMAT_FAILURE, f"unreadable SigningTime {when!r}")
        result.policy = ssp.findtext(f".//{{{ns}}}SigPolicyId/{{{ns}}}Identifier")
        cert_digest = ssp.find(f".//{{{ns}}}SigningCertificate/{{{ns}}}Cert/{{{ns}}}CertDigest")
        if cert_digest is not None and leaf is not None:
            method = cert_digest.find(f"{{{ns}}}DigestMethod")
            algorithm = DIGESTS.get(method.get("Algorithm") if method is not None else "")
            expected = "".join((cert_digest.findtext(f"{{{ns}}}DigestValue") or "").split())
            actual = (base64.b64encode(_digest(leaf.public_bytes(serialization.Encoding.DER), algorithm)).decode()
                      if algorithm else None)
            if actual != expected:
                # EN 319 102-1 5.2.3: the signing certificate cannot be identified.
                result.problem(SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
                               "the SigningCertificate digest does not match the certificate in KeyInfo")
        return

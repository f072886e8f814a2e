"""How the built-in parapheur seals each kind of document, and how it reads the seal's configuration."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from flowbus.errors import ConfigError, PermanentError
from flowbus.signature.cades import verify_cades
from flowbus.signature.pades import verify_pdf
from flowbus.signature.parapheur_actions import seal_document, seal_key
from flowbus.signature.pki import SEAL_CN
from flowbus.signature.xades import verify_xml

PES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples" / "pes" / \
    "HELIOS_SIMU_ALR2_1496987735_826268894.xml"


def test_seal_key_from_path_or_base64(seal_pki):
    by_path = seal_key({"seal_p12_path": str(seal_pki.seal_p12), "seal_password": seal_pki.password})
    by_b64 = seal_key({"seal_p12_base64": base64.b64encode(seal_pki.seal_p12.read_bytes()).decode(),
                       "seal_password": seal_pki.password})
    assert by_path.subject == by_b64.subject == SEAL_CN
    with pytest.raises(ConfigError) as err:
        seal_key({})
    assert err.value.field == "seal_p12_path"
    with pytest.raises(PermanentError) as err:
        seal_key({"seal_p12_path": str(seal_pki.seal_p12), "seal_password": "faux"})
    assert err.value.field == "pkcs12_password"
    with pytest.raises(PermanentError, match="expired"):
        seal_key({"seal_p12_path": str(seal_pki.expired_p12), "seal_password": seal_pki.password})


def test_pdf_gets_pades_pes_gets_xades_others_get_cades(seal_pki, acte_pdf):
    key = seal_pki.seal
    pdf, sig = seal_document(acte_pdf, "acte.pdf", "application/pdf", key, reason="Approuvé par Jeanne Martin")
    assert sig is None
    [v] = verify_pdf(pdf, trusted=seal_pki.trusted)
    assert v.intact and v.signer == SEAL_CN

    pes, sig = seal_document(PES.read_bytes(), "pes.xml", "application/xml", key, reason="r")
    assert sig is None
    results = verify_xml(pes, trusted=seal_pki.trusted)
    assert results and all(r.intact and r.signer == SEAL_CN for r in results)

    data = "Convention de partenariat\n".encode()
    same, sig = seal_document(data, "convention.txt", "text/plain", key, reason="r")
    assert same == data and sig is not None
    [v] = verify_cades(sig, data, trusted=seal_pki.trusted)
    assert v.intact and v.signer == SEAL_CN

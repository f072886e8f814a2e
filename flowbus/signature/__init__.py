"""Signatures: sign and verify XAdES (PES V2 Hélios), PAdES, CAdES; keys from PKCS#12; the server seal.

Modules: ``keys`` (PKCS#12 → SigningKey), ``pki`` (test PKI), ``xades``, ``pades``, ``cades``,
``verify`` (auto-detecting verifier), ``steps`` (the ``signature/seal`` connector).
"""

from flowbus.signature.keys import SigningKey, load_pkcs12

__all__ = ["SigningKey", "load_pkcs12"]

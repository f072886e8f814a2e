"""Signature throughput: XAdES (PES with 10 bordereaux), PAdES (10-page PDF), CAdES (1 MB), verification too.

Each figure is compared with raw RSA-2048 PKCS#1 v1.5 / SHA-256 signing with ``cryptography``
measured in the same run (the floor: every format does at least one such operation per
signature).  Run: ``python bench/bench_signature.py [--seconds 2]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowbus.signature.cades import sign_cades  # noqa: E402
from flowbus.signature.pades import make_test_pdf, sign_pdf  # noqa: E402
from flowbus.signature.pki import make_test_pki  # noqa: E402
from flowbus.signature.verify import verify  # noqa: E402
from flowbus.signature.xades import sign_pes  # noqa: E402

PES_SAMPLE = (ROOT / ".." / "shared" / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml").resolve()


def pes_with_bordereaux(count: int) -> bytes:
    root = etree.fromstring(PES_SAMPLE.read_bytes())
    first = root.find(".//Bordereau")
    parent = first.getparent()
    parent.remove(first)
    for i in range(count):
        bord = copy.deepcopy(first)
        bord.set("Id", f"BORD{1000 + i}")
        bord.find("BlocBordereau/IdBord").set("V", str(1000 + i))
        parent.append(bord)
    body = etree.tostring(root, encoding="ISO-8859-1", xml_declaration=False)
    return b'<?xml version="1.0" encoding="ISO-8859-1"?>\n' + body


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    count = 0
    start = time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement")
    args = parser.parse_args()
    pki = make_test_pki(Path(tempfile.mkdtemp(prefix="flowbus-bench-pki-")))
    key = pki.seal
    pes = pes_with_bordereaux(10)
    pdf = make_test_pdf(10)
    blob = os.urandom(1024 * 1024)
    digest_input = os.urandom(32)

    raw, _ = rate(lambda: key.private_key.sign(digest_input, padding.PKCS1v15(), hashes.SHA256()), args.seconds)
    print(f"raw RSA-2048 sign (cryptography): {raw:8.1f} signatures/s")
    print(f"{'case':38} {'docs/s':>9} {'sigs/s':>9} {'ratio to raw RSA':>17}")

    signed_pes = sign_pes(pes, key)
    signed_pdf = sign_pdf(pdf, key)
    p7s = sign_cades(blob, key)
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("XAdES sign, PES 10 bordereaux", lambda: sign_pes(pes, key), 10),
        ("PAdES sign B-B, PDF 10 pages", lambda: sign_pdf(pdf, key), 1),
        ("CAdES sign detached, 1 MB", lambda: sign_cades(blob, key), 1),
        ("XAdES verify, PES 10 bordereaux", lambda: verify(signed_pes, trusted=pki.trusted), 10),
        ("PAdES verify, PDF 10 pages", lambda: verify(signed_pdf, trusted=pki.trusted), 1),
        ("CAdES verify detached, 1 MB", lambda: verify(blob, detached=p7s, trusted=pki.trusted), 1),
    ]
    for name, fn, per_doc in cases:
        docs, _ = rate(fn, args.seconds)
        sigs = docs * per_doc
        print(f"{name:38} {docs:9.1f} {sigs:9.1f} {sigs / raw:16.1%}")
    print(f"sizes: PES {len(pes)} → {len(signed_pes)} bytes, PDF {len(pdf)} → {len(signed_pdf)} bytes, "
          f".p7s {len(p7s)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Offline check of a sealed package: file digests → manifest → seal → timestamp; names exactly what is wrong.

``verify_package(path)`` returns a list of ``Problem`` (empty: the package is intact).  It
needs nothing but the package: the seal and the timestamp carry their certificates.  Give
``trusted`` roots to also check that the seal and the timestamp chain to them.
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from cryptography import x509
from lxml import etree

from flowbus.archive import seda
from flowbus.archive.seal import MANIFEST, SEAL, TIMESTAMP, check_timestamp
from flowbus.errors import PermanentError

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a package: ``where`` is a path inside it (or the package itself)."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Report:
    problems: list[Problem]
    seal_subject: str | None = None
    timestamp: str | None = None
    tsa: str | None = None
    files: int = 0


class _Reader:
    def __init__(self, path: Path) -> None:
        if zipfile.is_zipfile(path):
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
            self._tar = None
            self.names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            self._zip = None
            self._tar = tarfile.open(path, "r:*")
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            self.names = list(self._members)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._zip is not None:
            with self._zip.open(name) as f:
                yield f
        else:
            f = self._tar.extractfile(self._members[name])
            assert f is not None
            with f:
                yield f

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        (self._zip or self._tar).close()


def _digest(reader: _Reader, name: str, algorithm: str) -> tuple[str, int]:
    h = hashlib.new(algorithm)
    size = 0
    with reader.open(name) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


_ALGORITHMS = {"SHA-512": "sha512", "SHA-384": "sha384", "SHA-256": "sha256"}


def verify_package(path: Path, *, trusted: list[x509.Certificate] | None = None,
                   xsd_dir: Path | None = None) -> list[Problem]:
    """Every problem found in the package at ``path`` (empty list: intact)."""
    return verify_report(path, trusted=trusted, xsd_dir=xsd_dir).problems


def verify_report(path: Path, *, trusted: list[x509.Certificate] | None = None,
                  xsd_dir: Path | None = None) -> Report:
    path = Path(path)
    report = Report([])
    problems = report.problems
    if not path.is_file():
        problems.append(Problem(str(path), "no such file"))
        return report
    try:
        reader = _Reader(path)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        problems.append(Problem(path.name, f"not a zip or tar package ({exc})"))
        return report
    try:
        _verify(reader, report, trusted, xsd_dir)
    finally:
        reader.close()
    return report


def _verify(reader: _Reader, report: Report, trusted: list[x509.Certificate] | None,
            xsd_dir: Path | None) -> None:
    problems = report.problems
    names = set(reader.names)
    if MANIFEST not in names:
        problems.append(Problem(MANIFEST, "missing from the package"))
        return
    manifest = reader.read(MANIFEST)
    try:
        objects = seda.data_objects(manifest)
    except etree.XMLSyntaxError as exc:
        problems.append(Problem(MANIFEST, f"not well-formed XML ({exc})"))
        objects = {}
    else:
        try:
            seda.validate(manifest, xsd_dir)  # the shipped XSD when none is given
        except PermanentError as exc:
            problems.append(Problem(MANIFEST, exc.message))
    # files: digests and sizes against the manifest
    for uri, expected in objects.items():
        report.files += 1
        if uri not in names:
            problems.append(Problem(uri, f"listed in the manifest ({expected['id']}) but missing from the package"))
            continue
        algorithm = _ALGORITHMS.get(expected["algorithm"])
        if algorithm is None:
            problems.append(Problem(uri, f"unsupported digest algorithm {expected['algorithm']!r} in the manifest"))
            continue
        try:
            actual, size = _digest(reader, uri, algorithm)
        except (zipfile.BadZipFile, EOFError) as exc:  # zip's own CRC-32 no longer matches, or the entry is cut
            problems.append(Problem(uri, f"content altered: {exc}"))
            continue
        if actual != expected["digest"]:
            problems.append(Problem(uri, f"content altered: {expected['algorithm']} is {actual[:16]}…, "
                                         f"the manifest says {expected['digest'][:16]}…"))
        if expected["size"] and str(size) != expected["size"]:
            problems.append(Problem(uri, f"size is {size} bytes, the manifest says {expected['size']}"))
    for extra in sorted(names - set(objects) - {MANIFEST, SEAL, TIMESTAMP}):
        problems.append(Problem(extra, "in the package but not listed in the manifest"))
    # seal over the manifest
    if SEAL not in names:
        problems.append(Problem(SEAL, "missing: the manifest is not sealed"))
        return
    seal = reader.read(SEAL)
    ts = check_timestamp(reader.read(TIMESTAMP), seal) if TIMESTAMP in names else None
    # the seal's certificate is judged at the time the timestamp proves, not today
    _check_seal(seal, manifest, trusted, report, ts.gen_time if ts and not ts.errors else None)
    if ts is None:
        problems.append(Problem(TIMESTAMP, "missing: the seal is not timestamped"))
        return
    report.timestamp = ts.gen_time.isoformat() if ts.gen_time else None
    report.tsa = ts.tsa
    for error in ts.errors:
        problems.append(Problem(TIMESTAMP, error))
    if ts.certificate is not None and not ts.errors:
        _check_tsa_certificate(ts.certificate, ts.gen_time, trusted, problems)


def _check_seal(seal: bytes, manifest: bytes, trusted: list[x509.Certificate] | None, report: Report,
                when: datetime | None) -> None:
    from flowbus.signature.cades import verify_cades
    try:
        results = verify_cades(seal, manifest, trusted=trusted, now=when)
    except PermanentError as exc:
        report.problems.append(Problem(SEAL, f"unreadable seal: {exc.message}"))
        return
    if not results:
        report.problems.append(Problem(SEAL, "the seal holds no signature"))
        return
    for result in results:
        report.seal_subject = result.signer
        if not result.intact:
            detail = "; ".join(result.errors) or "signature invalid"
            report.problems.append(Problem(MANIFEST, f"does not match its seal ({detail}): the manifest was edited "
                                                     "or the seal replaced"))
        if trusted is not None and result.chain_status != "trusted":
            report.problems.append(Problem(SEAL, f"the seal certificate ({result.signer}) does not chain to a "
                                                 f"trusted root (status: {result.chain_status})"))


def _check_tsa_certificate(cert: x509.Certificate, when, trusted: list[x509.Certificate] | None,
                           problems: list[Problem]) -> None:
    from flowbus.signature.base import chain_status
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if x509.oid.ExtendedKeyUsageOID.TIME_STAMPING not in eku:
            problems.append(Problem(TIMESTAMP, "the timestamp signer's certificate is not a timestamping certificate"))
    except x509.ExtensionNotFound:
        problems.append(Problem(TIMESTAMP, "the timestamp signer's certificate has no timestamping usage"))
    if trusted is not None:
        status, _ = chain_status(cert, [], trusted, when)
        if status != "trusted":
            problems.append(Problem(TIMESTAMP, f"the timestamp authority does not chain to a trusted root "
                                               f"(status: {status})"))

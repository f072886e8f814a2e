"""Sealed packages: build, verify offline, and tamper tests (one changed byte, a removed file, an edited
manifest, a replaced seal, a replaced timestamp) — ``flowbus archive verify`` fails each time and says what."""

from __future__ import annotations

import struct
import subprocess
import sys
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowbus.archive import seda
from flowbus.archive.package import build_package
from flowbus.archive.seal import InternalTimestamper, Sealer, check_timestamp
from flowbus.archive.verify import verify_package
from flowbus.outbound import LOOPBACK, OutboundPolicy
from flowbus.signature.cades import sign_cades

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would

REPO = Path(__file__).resolve().parents[2]
XSD = REPO / ".." / "shared" / "schemas" / "seda"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<ARActes>' + b"x" * 5000 + b"</ARActes>\n"


def _transfer() -> seda.Transfer:
    return seda.Transfer(message_id="TR-42", date=datetime(2026, 11, 23, 10, tzinfo=UTC), title="Délibération 42",
                         archival_agency="AD34", transferring_agency="21340000000017",
                         originating_agency="21340000000017")


@pytest.fixture
async def package(tmp_path, pki, make_source) -> Path:
    files = [make_source(PDF, "deliberation.pdf"), make_source(XML, "aractes.xml"),
             make_source(b"annexe", "annexe.txt")]
    result = await build_package(tmp_path / "sealed.zip", _transfer(), files,
                                 sealer=Sealer(pki.seal, InternalTimestamper(pki.tsa)), xsd_dir=XSD)
    return result.path


def _rewrite(src: Path, dst: Path, change) -> Path:
    """Copy a zip entry by entry; ``change(name, data)`` returns new bytes or None to drop the entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowbus", "archive", "verify", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


async def test_intact_package_verifies(package, pki):
    assert verify_package(package) == []
    assert verify_package(package, trusted=pki.trusted, xsd_dir=XSD) == []
    with zipfile.ZipFile(package) as z:
        assert sorted(z.namelist()) == ["content/001-deliberation.pdf", "content/002-aractes.xml",
                                        "content/003-annexe.txt", "manifest.xml", "manifest.xml.p7s",
                                        "manifest.xml.p7s.tsr"]
        check = check_timestamp(z.read("manifest.xml.p7s.tsr"), z.read("manifest.xml.p7s"))
    assert check.errors == [] and check.tsa == "flowbus Horodatage de test"
    run = _cli(str(package), "--ca", str(pki.ca_pem))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK ") and "3 files" in run.stdout



async def test_openssl_reads_the_timestamp_as_documented(package, pki, tmp_path):
    """The .tsr is an RFC 3161 TimeStampResp: plain `openssl ts -verify -in … -data …` checks it against the seal."""
    import shutil
    if shutil.which("openssl") is None:
        pytest.skip("openssl is installed by .ci/run; not on this machine")
    with zipfile.ZipFile(package) as z:
        (tmp_path / "manifest.xml.p7s").write_bytes(z.read("manifest.xml.p7s"))
        (tmp_path / "manifest.xml.p7s.tsr").write_bytes(z.read("manifest.xml.p7s.tsr"))
    command = ["openssl", "ts", "-verify", "-in", "manifest.xml.p7s.tsr", "-data", "manifest.xml.p7s",
               "-CAfile", str(pki.ca_pem)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert run.returncode == 0 and "Verification: OK" in run.stdout, run.stdout + run.stderr
    reply = subprocess.run(["openssl", "ts", "-reply", "-in", "manifest.xml.p7s.tsr", "-text"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=30)
    assert "Status: Granted." in reply.stdout, reply.stdout + reply.stderr
    (tmp_path / "manifest.xml.p7s").write_bytes(b"another seal")
    tampered = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert tampered.returncode != 0


async def test_one_changed_byte_is_named(package, tmp_path):
    def flip(name, data):
        if name == "content/001-deliberation.pdf":
            return data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return data
    bad = _rewrite(package, tmp_path / "byte.zip", flip)
    problems = verify_package(bad)
    assert [p.where for p in problems] == ["content/001-deliberation.pdf"]
    assert "content altered" in problems[0].what
    run = _cli(str(bad))
    assert run.returncode == 1
    assert run.stdout.strip().splitlines() == [f"FAIL {problems[0]}"]


async def test_byte_changed_in_place_is_named(package, tmp_path):
    """Changed inside the zip without rewriting it: zip's own CRC-32 no longer matches either."""
    with zipfile.ZipFile(package) as z:
        start = z.getinfo("content/001-deliberation.pdf").header_offset
    raw = bytearray(package.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[start + 26:start + 30])
    raw[start + 30 + name_length + extra_length + 100] ^= 1
    (tmp_path / "in-place.zip").write_bytes(raw)
    problems = verify_package(tmp_path / "in-place.zip")
    assert [p.where for p in problems] == ["content/001-deliberation.pdf"]
    assert "content altered" in problems[0].what


async def test_removed_file_is_named(package, tmp_path):
    bad = _rewrite(package, tmp_path / "removed.zip", lambda n, d: None if n.endswith("aractes.xml") else d)
    problems = verify_package(bad)
    assert [(p.where, "missing from the package" in p.what) for p in problems] == [("content/002-aractes.xml", True)]
    assert _cli(str(bad)).returncode == 1


async def test_added_file_is_named(package, tmp_path):
    def add(name, data):
        return data
    bad = _rewrite(package, tmp_path / "added.zip", add)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("content/004-intrus.pdf", b"%PDF-1.4")
    assert [p.where for p in verify_package(bad)] == ["content/004-intrus.pdf"]


async def test_edited_manifest_is_named(package, tmp_path):
    bad = _rewrite(package, tmp_path / "manifest.zip",
                   lambda n, d: d if n != "manifest.xml"
                   else d.replace("Délibération 42".encode(), "Délibération 43".encode()))
    problems = verify_package(bad)
    assert [p.where for p in problems] == ["manifest.xml"]
    assert "does not match its seal" in problems[0].what
    run = _cli(str(bad))
    assert run.returncode == 1 and "FAIL manifest.xml: does not match its seal" in run.stdout


async def test_edited_manifest_digest_to_hide_a_changed_file(package, tmp_path):
    """Changing a file and its digest in the manifest still breaks the seal."""
    import hashlib
    new_pdf = PDF.replace(b"%%EOF", b"%%EOG")
    with zipfile.ZipFile(package) as z:
        old_digest = hashlib.sha512(z.read("content/001-deliberation.pdf")).hexdigest().encode()

    def change(name, data):
        if name == "content/001-deliberation.pdf":
            return new_pdf
        if name == "manifest.xml":
            return data.replace(old_digest, hashlib.sha512(new_pdf).hexdigest().encode())
        return data
    problems = verify_package(_rewrite(package, tmp_path / "hidden.zip", change))
    assert [p.where for p in problems] == ["manifest.xml"]


async def test_replaced_seal_is_named(package, tmp_path, pki):
    """A seal made afresh over an edited manifest (even by the genuine key) no longer matches the timestamp;
    a seal by another key is refused when trust roots are given."""
    with zipfile.ZipFile(package) as z:
        manifest = z.read("manifest.xml").replace("Délibération 42".encode(), "Délibération 43".encode())
    forged = sign_cades(manifest, pki.signer)

    def change(name, data):
        return {"manifest.xml": manifest, "manifest.xml.p7s": forged}.get(name, data)
    bad = _rewrite(package, tmp_path / "seal.zip", change)
    problems = verify_package(bad, trusted=pki.trusted)
    assert [p.where for p in problems] == ["manifest.xml.p7s.tsr"]
    assert "does not cover this seal" in problems[0].what
    run = _cli(str(bad), "--ca", str(pki.ca_pem))
    assert run.returncode == 1 and "FAIL manifest.xml.p7s.tsr: the timestamp does not cover this seal" in run.stdout
    # the forger re-timestamps too: the seal's signer is then what gives it away
    fresh_token = InternalTimestamper(pki.tsa).issue(__import__("hashlib").sha256(forged).digest())
    bad2 = _rewrite(bad, tmp_path / "seal2.zip",
                    lambda n, d: fresh_token if n == "manifest.xml.p7s.tsr" else d)
    other_pki = __import__("flowbus.signature.pki", fromlist=["x"]).make_test_pki(tmp_path / "other")
    problems = verify_package(bad2, trusted=other_pki.trusted)
    assert {p.where for p in problems} == {"manifest.xml.p7s", "manifest.xml.p7s.tsr"}
    assert "does not chain to a trusted root" in problems[0].what


async def test_removed_seal_and_altered_token_are_named(package, tmp_path):
    unsealed = _rewrite(package, tmp_path / "unsealed.zip", lambda n, d: None if n == "manifest.xml.p7s" else d)
    assert [str(p) for p in verify_package(unsealed)] == ["manifest.xml.p7s: missing: the manifest is not sealed"]
    def corrupt(name, data):
        if name == "manifest.xml.p7s.tsr":
            from asn1crypto import cms, tsp

            from flowbus.archive.seal import token_of
            raw = cms.ContentInfo.load(token_of(data))["content"]["encap_content_info"]["content"].contents
            gen_time = tsp.TSTInfo.load(raw)["gen_time"].dump()
            i = data.index(gen_time) + 4  # a digit of the year inside the signed TSTInfo
            return data[:i] + (b"9" if data[i:i + 1] != b"9" else b"8") + data[i + 1:]
        return data
    problems = verify_package(_rewrite(package, tmp_path / "token.zip", corrupt))
    assert [p.where for p in problems] == ["manifest.xml.p7s.tsr"]
    assert "signature is invalid (token altered)" in problems[0].what


async def test_tar_package_and_garbage(tmp_path, pki, make_source):
    result = await build_package(tmp_path / "p.tar", _transfer(), [make_source(PDF, "a.pdf")],
                                 sealer=Sealer(pki.seal, InternalTimestamper(pki.tsa)), xsd_dir=XSD, fmt="tar")
    with tarfile.open(result.path) as tar:
        assert tar.extractfile("content/001-a.pdf").read() == PDF
    assert verify_package(result.path, trusted=pki.trusted) == []
    (tmp_path / "junk.zip").write_bytes(b"not a package")
    assert "not a zip or tar package" in verify_package(tmp_path / "junk.zip")[0].what
    run = _cli(str(tmp_path / "absent.zip"))
    assert run.returncode == 1 and "no such file" in run.stdout


async def test_http_timestamp_authority(tmp_path, pki, make_source):
    from flowbus.archive.seal import HttpTimestamper
    from flowbus.signature.tsa_sim import TsaSimulator
    with TsaSimulator(pki.tsa) as url:
        result = await build_package(tmp_path / "p.zip", _transfer(), [make_source(PDF, "a.pdf")],
                                     sealer=Sealer(pki.seal, HttpTimestamper(url, outbound=LOOPBACK_POLICY)), xsd_dir=XSD)
    assert verify_package(result.path, trusted=pki.trusted) == []


async def test_unreachable_tsa_is_transient_and_leaves_no_file(tmp_path, pki, make_source):
    from flowbus.archive.seal import HttpTimestamper
    from flowbus.errors import TransientError
    with pytest.raises(TransientError) as err:
        await build_package(tmp_path / "p.zip", _transfer(), [make_source(PDF, "a.pdf")],
                            sealer=Sealer(pki.seal, HttpTimestamper("http://127.0.0.1:9/", timeout=2, outbound=LOOPBACK_POLICY)), xsd_dir=XSD)
    assert err.value.field == "tsa_url"
    assert not (tmp_path / "p.zip").exists()

"""`flowbus sign` / `flowbus verify` through flowbus.cli.main: exit codes, output, nothing lost on errors."""

from __future__ import annotations

import json

import pytest

from flowbus.cli import main
from flowbus.signature.pades import make_test_pdf


@pytest.fixture
def env_password(monkeypatch, pki):
    monkeypatch.setenv("FLOWBUS_TEST_P12_PW", pki.password)
    return "FLOWBUS_TEST_P12_PW"


def test_sign_and_verify_each_format(pki, pes3, tmp_path, env_password, capsys):
    (tmp_path / "pes.xml").write_bytes(pes3)
    (tmp_path / "doc.pdf").write_bytes(make_test_pdf(4))
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 64)
    jobs = [("xades-pes", "pes.xml", "pes-signed.xml"), ("pades", "doc.pdf", "doc-signed.pdf"),
            ("cades", "data.bin", "data.bin.p7s")]
    for fmt, src, dst in jobs:
        extra = ["--visible"] if fmt == "pades" else ["--role", "Ordonnateur"] if fmt == "xades-pes" else []
        code = main(["sign", "--format", fmt, "--p12", str(pki.seal_p12), "--password-env", env_password, *extra,
                     str(tmp_path / src), str(tmp_path / dst)])
        assert code == 0
        assert f"-> {tmp_path / dst}" in capsys.readouterr().out
    ca = ["--ca", str(pki.ca_pem)]
    assert main(["verify", str(tmp_path / "pes-signed.xml"), *ca]) == 0
    out = capsys.readouterr().out
    assert out.count(": TOTAL-PASSED :") == 3 and "BORD1002" in out and "Cachet serveur — Commune de Démo" in out
    assert main(["verify", str(tmp_path / "doc-signed.pdf"), *ca]) == 0
    assert "trusted (de confiance)" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "data.bin"), "--detached", str(tmp_path / "data.bin.p7s"), *ca]) == 0
    capsys.readouterr()
    # Without trust anchors the chain is not judged: intact, but INDETERMINATE (exit 2), never a pass.
    assert main(["verify", str(tmp_path / "pes-signed.xml"), "--json"]) == 2
    parsed = json.loads(capsys.readouterr().out)
    assert [p["reference"] for p in parsed] == ["BORD1000", "BORD1001", "BORD1002"]
    assert all(p["chain_status"] == "unknown" and p["intact"] for p in parsed)
    assert {(p["indication"], p["sub_indication"]) for p in parsed} == {("INDETERMINATE",
                                                                        "NO_CERTIFICATE_CHAIN_FOUND")}


def test_verify_exits_1_on_altered_content_or_no_signature(pki, pes3, tmp_path, env_password, capsys):
    (tmp_path / "data.bin").write_bytes(b"montant: 1000 EUR")
    assert main(["sign", "--format", "cades", "--p12", str(pki.signer_p12), "--password-env", env_password,
                 str(tmp_path / "data.bin"), str(tmp_path / "data.p7s")]) == 0
    (tmp_path / "data.bin").write_bytes(b"montant: 9000 EUR")
    assert main(["verify", str(tmp_path / "data.bin"), "--detached", str(tmp_path / "data.p7s")]) == 1
    assert "TOTAL-FAILED (HASH_FAILURE)" in capsys.readouterr().out
    (tmp_path / "plain.pdf").write_bytes(make_test_pdf(1))
    assert main(["verify", str(tmp_path / "plain.pdf")]) == 1
    assert "aucune signature trouvée" in capsys.readouterr().out
    (tmp_path / "pes.xml").write_bytes(pes3)
    assert main(["sign", "--format", "xades-pes", "--p12", str(pki.seal_p12), "--password-env", env_password,
                 str(tmp_path / "pes.xml"), str(tmp_path / "pes-signed.xml")]) == 0
    text = (tmp_path / "pes-signed.xml").read_bytes().replace(b'<IdBord V="1001"/>', b'<IdBord V="1009"/>')
    (tmp_path / "pes-signed.xml").write_bytes(text)
    assert main(["verify", str(tmp_path / "pes-signed.xml"), "--ca", str(pki.ca_pem)]) == 1
    out = capsys.readouterr().out
    assert out.count(": TOTAL-PASSED :") == 2 and out.count(": TOTAL-FAILED (HASH_FAILURE) :") == 1


def test_bad_inputs_give_clear_errors_and_write_nothing(pki, pes3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WRONG_PW", "pas-le-bon-mot-de-passe")
    (tmp_path / "pes.xml").write_bytes(pes3)
    out = tmp_path / "out.xml"
    code = main(["sign", "--format", "xades-pes", "--p12", str(pki.seal_p12), "--password-env", "WRONG_PW",
                 str(tmp_path / "pes.xml"), str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "[pkcs12_password]" in err and "wrong password" in err
    assert "pas-le-bon-mot-de-passe" not in err
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    monkeypatch.setenv("PW", pki.password)
    (tmp_path / "broken.xml").write_bytes(b"<?xml version='1.0'?><n:PES_Aller xmlns:n='urn:n'><Bordereau>")
    assert main(["sign", "--format", "xades-pes", "--p12", str(pki.seal_p12), "--password-env", "PW",
                 str(tmp_path / "broken.xml"), str(out)]) == 2
    assert "malformed" in capsys.readouterr().err and not out.exists()
    assert main(["sign", "--format", "pades", "--p12", str(pki.expired_p12), "--password-env", "PW",
                 str(tmp_path / "pes.xml"), str(out)]) == 2
    assert "expired" in capsys.readouterr().err
    assert main(["sign", "--format", "cades", "--p12", str(pki.seal_p12), "--password-env", "UNSET_VARIABLE_X",
                 str(tmp_path / "pes.xml"), str(out)]) == 2
    assert "UNSET_VARIABLE_X is not set" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "broken.xml")]) == 2
    assert main(["verify", str(tmp_path / "missing.xml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert (tmp_path / "pes.xml").read_bytes() == pes3  # the input is never touched

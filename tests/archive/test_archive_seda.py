"""Formats, profiles and the ArchiveTransfer builder; every manifest is checked against the official XSD."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import xmlschema
from lxml import etree

from flowbus.archive import formats, profile, seda
from flowbus.archive.package import build_package
from flowbus.errors import ConfigError, PermanentError

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
XSD = SHARED / "schemas" / "seda"
SAMPLES = SHARED / "samples" / "seda"


def test_formats_by_magic_bytes():
    assert formats.identify(b"%PDF-1.7\n%\xe2\xe3", "acte.pdf").puid == "fmt/276"
    assert formats.identify(b"%PDF-1.4\n", "x.bin").puid == "fmt/18"
    assert formats.identify(b"%PDF-2.0\n", "x.pdf").puid == "fmt/1129"
    pdfa = b"%PDF-1.4\n<x:xmpmeta><pdfaid:part>2</pdfaid:part><pdfaid:conformance>B</pdfaid:conformance>"
    assert formats.identify(pdfa, "a.pdf").puid == "fmt/477"
    assert formats.identify(b'\xef\xbb\xbf<?xml version="1.0"?><PES_Aller/>', "pes.xml").puid == "fmt/101"
    assert formats.identify(b"PK\x03\x04" + b"\x00" * 40, "x.zip").puid == "x-fmt/263"
    assert formats.identify(b"\x1f\x8b\x08\x00", "a.tar.gz").puid == "x-fmt/266"
    cms = b"\x30\x82\x05\x00\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0"
    fmt = formats.identify(cms, "acte.pdf.p7s")
    assert (fmt.puid, fmt.mime_type) == ("fmt/670", "application/pkcs7-signature")
    assert formats.identify(b"hello\n", "note.txt").puid == "x-fmt/111"
    assert formats.identify(b"\x00\x01\x02", "blob").puid is None
    sample = (SAMPLES / "ArchiveTransfer-2.1.xml").read_bytes()
    assert formats.identify(sample[:65536], "bordereau.xml").puid == "fmt/101"


def test_profile_renders_fields_and_entity_defaults():
    prof = profile.load_profile(REPO / "config", "actes", "deliberation")
    assert prof.name == "deliberation" and prof.version == "2.1"
    ctx = {"fields": {"numero_acte": "DEL2026_42", "objet": "Budget supplémentaire"}, "document": {"id": "d1"}}
    assert profile.render(prof.title, ctx) == "Acte DEL2026_42 : Budget supplémentaire"
    assert profile.render("{fields.absent}", ctx) == ""
    custom = profile.parse_profile({"defaults": {"archival_agency": "AD34"},
                                    "entities": {"e1": {"archival_profile": "P-E1"}}}, "x")
    agencies = custom.agencies("e1", "21340000000017", {"archival_agreement": "ACC"})
    assert agencies["archival_agency"] == "AD34" and agencies["archival_profile"] == "P-E1"
    assert agencies["transferring_agency"] == "21340000000017" and agencies["archival_agreement"] == "ACC"
    assert custom.agencies("e2")["archival_agency"] == "AD34" and "archival_profile" not in custom.agencies("e2")


def test_profile_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        profile.parse_profile({"version": "3.0"}, "x", "f.yml")
    assert err.value.field == "version"
    with pytest.raises(ConfigError) as err:
        profile.parse_profile({"rules": {"appraisal": {"rule": "A", "final_action": "Burn"}}}, "x")
    assert err.value.field == "final_action"
    with pytest.raises(ConfigError) as err:
        profile.parse_profile({"defaults": {"archival_agencyy": "A"}}, "x")
    assert "archival_agencyy" in str(err.value)
    with pytest.raises(ConfigError) as err:
        profile.parse_profile({"keywords": [{"content": "x", "type": "person"}]}, "x")
    assert err.value.field == "keywords" and "persname" in str(err.value)
    with pytest.raises(ConfigError) as err:
        profile.load_profile(tmp_path, "nope", "flow")
    assert err.value.field == "profile" and "nope.yml" in str(err.value)


def _transfer(version: str) -> seda.Transfer:
    return seda.Transfer(
        message_id="FLOWBUS-TR-1", date=datetime(2026, 11, 23, 10, 15, tzinfo=UTC), version=version,
        title="Délibération 2026-042 : budget", comment="Délibération et ses pièces", description="Acte transmis",
        keywords=[("budget", "subject"), ("", "subject")], start_date="2026-11-20", end_date="2026-11-20T12:00:00",
        archival_agency="AD34", transferring_agency="21340000000017", originating_agency="21340000000017",
        submission_agency="21340000000017", archival_agreement="ACCORD", archival_profile="PROFIL",
        rules=seda.Rules("APP-DELIB", "2026-11-20", "Keep", "AR038", "2026-11-20"))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
async def test_manifest_validates_against_the_official_xsd(tmp_path, version, make_source, pki):
    from flowbus.archive.seal import InternalTimestamper, Sealer
    files = [make_source((SAMPLES / "deliberation.pdf").read_bytes(), "délibération n°42.pdf", "Acte signé"),
             make_source((SAMPLES / "Acknowledgement-2.1.xml").read_bytes(), "aractes.xml", "Accusé de réception"),
             make_source(b"\x30\x82\x00\x10\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02", "acte.p7s", "Signature")]
    result = await build_package(tmp_path / "p.zip", _transfer(version), files,
                                 sealer=Sealer(pki.seal, InternalTimestamper(pki.tsa)), xsd_dir=XSD)
    # an independent validator (xmlschema, pure Python) agrees with the lxml check made before leaving
    xmlschema.XMLSchema(str(XSD / version / f"seda-{version}-main.xsd")).validate(etree.fromstring(result.manifest))
    root = etree.fromstring(result.manifest)
    ns = {"s": seda.NAMESPACES[version]}
    assert [e.text for e in root.iterfind(".//s:BinaryDataObject/s:FormatIdentification/s:FormatId", ns)] == \
        ["fmt/18", "fmt/101", "fmt/670"]  # the sample is a PDF 1.4
    import hashlib
    assert root.findtext(".//s:BinaryDataObject/s:MessageDigest", namespaces=ns) == \
        hashlib.sha512((SAMPLES / "deliberation.pdf").read_bytes()).hexdigest()
    assert root.findtext(".//s:Content/s:Title", namespaces=ns) == "Délibération 2026-042 : budget"
    assert [e.text for e in root.iterfind(".//s:ArchiveUnit/s:ArchiveUnit/s:Content/s:Title", ns)] == \
        ["Acte signé", "Accusé de réception", "Signature"]
    assert root.findtext(".//s:AccessRule/s:Rule", namespaces=ns) == "AR038"
    assert root.findtext(".//s:ManagementMetadata/s:ArchivalProfile", namespaces=ns) == "PROFIL"
    assert len(root.findall(".//s:Keyword", ns)) == 1  # the empty keyword is left out


def test_invalid_manifest_is_refused_before_leaving():
    transfer = _transfer("2.1")
    bad = seda.Transfer(**{**transfer.__dict__, "description_level": "Dossier"})
    xml = seda.build_transfer(bad, [])
    with pytest.raises(PermanentError) as err:
        seda.validate(xml, XSD)
    assert err.value.field == "manifest" and "Dossier" in str(err.value)
    # without an XSD directory: the XSD shipped in schemas/seda, never less
    root = etree.fromstring(seda.build_transfer(transfer, []))
    root.remove(root.find("{%s}ArchivalAgency" % seda.NAMESPACES["2.1"]))
    with pytest.raises(PermanentError, match="does not validate against its XSD.*ArchivalAgency"):
        seda.validate(etree.tostring(root), None)
    seda.validate(seda.build_transfer(transfer, []), None)


def test_samples_and_replies_validate():
    for name in ("ArchiveTransfer-2.1.xml", "ArchiveTransfer-2.2.xml", "Acknowledgement-2.1.xml",
                 "ArchiveTransferReply-2.1.xml"):
        seda.validate((SAMPLES / name).read_bytes(), XSD)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    ack = seda.build_acknowledgement(message_id="ACK-1", received_id="TR-1", sender="AD34", receiver="2134", date=now)
    rejected = seda.build_reply(message_id="ATR-1", request_id="TR-1", reply_code="300", archival_agency="AD34",
                                transferring_agency="2134", date=now, comment="Profil inconnu")
    for message in (ack, rejected):
        seda.validate(message, XSD)
    assert seda.parse_reply(rejected)["reply_code"] == "300"
    assert seda.parse_reply(ack) == {"kind": "Acknowledgement", "reply_code": None, "request_id": "TR-1",
                                     "message_id": "ACK-1", "comment": None}

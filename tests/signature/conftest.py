"""Fixtures of the signature tests: a test PKI, a PES_Aller with several bordereaux, a multi-page PDF."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from lxml import etree

from flowbus.signature.pades import make_test_pdf
from flowbus.signature.pki import TestPKI, make_test_pki

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()
PES_SAMPLE = SHARED / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"


def pes_with_bordereaux(count: int) -> bytes:
    """The real unsigned PES_Aller sample, its dépense bordereau repeated ``count`` times (new Id, IdBord,
    accented object), in ISO-8859-1 as Hélios wants."""
    root = etree.fromstring(PES_SAMPLE.read_bytes())
    first = root.find(".//Bordereau")
    parent = first.getparent()
    template = copy.deepcopy(first)
    parent.remove(first)
    for i in range(count):
        bord = copy.deepcopy(template)
        bord.set("Id", f"BORD{1000 + i}")
        bord.find("BlocBordereau/IdBord").set("V", str(1000 + i))
        bord.find(".//InfoPce/Obj").set("V", f"Fournitures école élémentaire n°{i + 1}")
        bord.tail = "\n  "
        parent.append(bord)
    body = etree.tostring(root, encoding="ISO-8859-1", xml_declaration=False)
    return b'<?xml version="1.0" encoding="ISO-8859-1"?>\n' + body


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def pes3() -> bytes:
    return pes_with_bordereaux(3)


@pytest.fixture(scope="session")
def pdf5() -> bytes:
    return make_test_pdf(5)

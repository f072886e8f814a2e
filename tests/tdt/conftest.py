"""Fixtures of the télétransmission tests: shared samples and schemas, an in-memory BlobStore,
a minimal runtime (real SQLite store, ManualClock, aiohttp session) and the S²LOW simulator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xmlschema
from lxml import etree

from flowbus.blobs.memory import MemoryBlobStore
from flowbus.clock import ManualClock
from flowbus.connectors.tdt.helios import encode_pj
from flowbus.connectors.tdt.s2low_sim import S2lowSimulator, _tiny_pdf
from flowbus.outbound import LOOPBACK, OutboundPolicy, client_session

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()
ACTES_XSD = SHARED / "schemas" / "actes" / "actesv1_1.xsd"
ACQUIT_XSD = SHARED / "schemas" / "pes" / "PES_V2" / "Rev0" / "PES_V2_Acquit_Autonome_V2.xsd"
PES_SAMPLE = SHARED / "samples" / "pes" / "HELIOS_SIMU_ALR2_1496987735_826268894.xml"


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"expected the shared directory beside the repository: {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def actes_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(ACTES_XSD))


@pytest.fixture(scope="session")
def acquit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(ACQUIT_XSD))


@pytest.fixture(scope="session")
def pdf() -> bytes:
    return _tiny_pdf("Délibération n° 2026-001")


@pytest.fixture
def make_pes() -> Any:
    """A PES_Aller derived from the real sample: new NomFic, optional PJ (gzip+base64) and accents."""
    def make(nom_fic: str = "PES_TEST_001", pjs: list[tuple[str, str, bytes]] = (), libelle: str = "COMMUNE") -> bytes:
        text = PES_SAMPLE.read_bytes().decode("iso-8859-1")
        text = text.replace("HELIOS_SIMU_ALR2_1496987735_826268894.xml", nom_fic, 1)
        text = text.replace('<LibelleColBud V="COMMUNE"/>', f'<LibelleColBud V="{libelle}"/>')
        blocks = "".join(
            f'<PJ><Contenu><Fichier MIMEType="application/pdf">{encode_pj(content)}</Fichier></Contenu>'
            f'<IdUnique V="{uid}"/><NomPJ V="{name}"/><TypePJ V="003"/><Description V="Facture"/></PJ>'
            for uid, name, content in pjs)
        text = re.sub(r"(<EnTetePES_PJ>.*?</EnTetePES_PJ>)", lambda m: m.group(1) + blocks, text, flags=re.S)
        return text.encode("iso-8859-1")
    return make


class FakeRuntime:
    def __init__(self, store: Any, blobs: MemoryBlobStore, clock: ManualClock, http: aiohttp.ClientSession) -> None:
        self.store, self.blobs, self.clock, self.http = store, blobs, clock, http
        self.outbound = LOOPBACK_POLICY
        self.flows: dict[str, Any] = {}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake_runtime(tmp_path: Path, clock: ManualClock) -> AsyncIterator[FakeRuntime]:
    from flowbus.store.sqlite import SQLiteStore
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    await store.migrate()
    async with client_session(LOOPBACK_POLICY) as http:
        yield FakeRuntime(store, MemoryBlobStore(), clock, http)
    await store.close()


def actes_messages_of(sim: S2lowSimulator) -> list[tuple[str, bytes]]:
    """Every ACTES XML message the simulator built or sent: archives, letters, answers, ARs, anomalies."""
    from flowbus.connectors.tdt.actes import untar_gz
    out: list[tuple[str, bytes]] = []
    for t in sim.transactions.values():
        if t.archive is not None:
            out += [(n, c) for n, c in t.archive.files.items() if n.endswith(".xml")]
        for name, content in t.files.items():
            if name == "archive":
                out += [(n, c) for n, c in untar_gz(content).items() if n.endswith(".xml")]
            else:
                out.append((f"{t.id}:{name}", content))
        for _, _, payload in t.timeline:
            payload = payload() if callable(payload) else payload
            if payload.lstrip().startswith(b"<?xml"):
                out.append((f"{t.id}:status", payload))
    return out


@pytest.fixture
async def sim(clock: ManualClock, actes_schema: xmlschema.XMLSchema) -> AsyncIterator[S2lowSimulator]:
    """The simulator; at teardown every ACTES message it produced is validated against the official XSD."""
    simulator = S2lowSimulator(clock=clock, delays={"validate": timedelta(minutes=1), "transmit": timedelta(minutes=5),
                                                    "ar": timedelta(hours=2), "pes_transmit": timedelta(minutes=5),
                                                    "pes_acquit": timedelta(hours=1)})
    await simulator.start()
    yield simulator
    await simulator.stop()
    validate_simulator_messages(simulator, actes_schema)


def validate_simulator_messages(simulator: S2lowSimulator, schema: xmlschema.XMLSchema) -> int:
    messages = actes_messages_of(simulator)
    for name, content in messages:
        errors = list(schema.iter_errors(etree.fromstring(content)))
        assert not errors, f"simulator message {name} is not valid ACTES: {errors[0]}"
    return len(messages)


@pytest.fixture
def check_actes_messages(actes_schema: xmlschema.XMLSchema) -> Any:
    """``check_actes_messages(sim)`` validates every ACTES message ``sim`` produced; returns how many."""
    return lambda simulator: validate_simulator_messages(simulator, actes_schema)


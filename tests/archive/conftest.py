"""Fixtures of the archive tests: the shared SEDA schemas and samples, a test PKI, in-memory sources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowbus.archive.package import SourceFile
from flowbus.signature.pki import make_test_pki

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
XSD_DIR = SHARED / "schemas" / "seda"
SAMPLES = SHARED / "samples" / "seda"


# Some archive tests run on a manual clock set to this day (test_archive_steps, test_archive_asalae):
# the PKI is issued for it (valid from the day before, for two years), not for the day the tests run,
# or its certificates would not yet be valid at that clock's time from the next morning on.
PKI_ISSUED = datetime(2026, 11, 23, 9, tzinfo=UTC)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"), now=PKI_ISSUED)


@pytest.fixture
def xsd_dir() -> Path:
    return XSD_DIR


@pytest.fixture
def make_source():
    return source


def source(data: bytes, filename: str, title: str | None = None, chunk: int = 4096) -> SourceFile:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), chunk):
            yield data[i:i + chunk]
    return SourceFile(filename, title or filename, chunks, len(data), datetime(2026, 11, 20, 9, tzinfo=UTC))

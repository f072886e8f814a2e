"""Sealed SEDA package of 1,000 files / 2 GB: time, ratio to this machine's SHA-512 throughput, peak RSS growth.

The files are generated on disk first (streamed, never whole in memory), then
``build_package`` streams them into a sealed zip (SHA-512 while writing, XSD-validated
manifest, CAdES seal, internal RFC 3161 timestamp), then ``verify_package`` reads it back.
The reference is ``hashlib.sha512`` over the same number of bytes, measured in the same run:
building a package has to hash every byte once, so the ratio says how close to that floor
the whole pipeline (read, hash, CRC-32, write) gets.  Targets: ratio ≥ 0.5, RSS growth < 100 MB.
The rate at which the input files were written is printed too: a package is written once, so
when the disk is slower than SHA-512 (on this VM beyond ~1 GB of dirty pages) it bounds the build.

Run: ``python bench/bench_archive.py [--files 1000] [--total-mb 2048] [--dir /tmp]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowbus.archive import seda  # noqa: E402
from flowbus.archive.package import SourceFile, build_package  # noqa: E402
from flowbus.archive.seal import InternalTimestamper, Sealer  # noqa: E402
from flowbus.archive.verify import verify_package  # noqa: E402
from flowbus.signature.pki import make_test_pki  # noqa: E402

XSD = ROOT / ".." / "shared" / "schemas" / "seda"
CHUNK = 1024 * 1024


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Highest RSS seen every 20 ms while running (ru_maxrss would include what ran before)."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def generate(directory: Path, files: int, total: int) -> list[Path]:
    """``files`` files of ``total`` bytes in all: a PDF header, then pseudo-random 1 MB blocks varied per file."""
    block = os.urandom(CHUNK)
    size = total // files
    paths = []
    for i in range(files):
        path = directory / f"piece-{i:04d}.pdf"
        with path.open("wb") as f:
            f.write(b"%PDF-1.7\n%" + str(i).encode() + b"\n")
            left = size - f.tell()
            salt = i.to_bytes(4, "big")
            while left > 0:
                n = min(left, CHUNK)
                f.write(salt + block[4:n] if n > 4 else block[:n])
                left -= n
        paths.append(path)
    return paths


def sha512_throughput(total: int) -> float:
    """Bytes per second of hashlib.sha512 over ``total`` bytes of 1 MB chunks (in memory)."""
    block = os.urandom(CHUNK)
    h = hashlib.sha512()
    start = time.perf_counter()
    for _ in range(total // CHUNK):
        h.update(block)
    return total / (time.perf_counter() - start)


def opener(path: Path):
    """1 MB chunks read in a worker thread, as FilesystemBlobStore does; stops at the known size (no EOF read)."""
    size = path.stat().st_size

    async def chunks():
        with path.open("rb") as f:
            left = size
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
    return chunks


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--total-mb", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    total = args.total_mb * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="flowbus-bench-archive-", dir=args.dir))
    try:
        pki = make_test_pki(work / "pki")
        print(f"generating {args.files} files, {total / 1e9:.2f} GB in {work} …", flush=True)
        t = time.perf_counter()
        paths = generate(work, args.files, total)
        gen_s = time.perf_counter() - t
        write_rate = total / gen_s  # this machine's sequential write rate, same sizes, same disk
        print(f"  generated in {gen_s:.1f} s ({write_rate / 1e6:.0f} MB/s: the disk's write rate)")
        sha_rate = sha512_throughput(min(total, 1024 * CHUNK))
        sources = [SourceFile(p.name, f"Pièce {i + 1}", opener(p), p.stat().st_size, datetime.now(UTC))
                   for i, p in enumerate(paths)]
        transfer = seda.Transfer(message_id="BENCH-1", date=datetime.now(UTC), title="Bench 1000 pièces",
                                 archival_agency="AD34", transferring_agency="21340000000017")
        sealer = Sealer(pki.seal, InternalTimestamper(pki.tsa))
        seda.schema(XSD, "2.1")  # compile once, as a running server does
        rss_before = rss_mb()
        t = time.perf_counter()
        with RssSampler() as sampler:
            result = await build_package(work / "package.zip", transfer, sources, sealer=sealer, xsd_dir=XSD)
        elapsed = time.perf_counter() - t
        peak = sampler.peak
        data_bytes = sum(o.size for o in result.objects)
        rate = data_bytes / elapsed
        t = time.perf_counter()
        problems = verify_package(result.path)
        verify_s = time.perf_counter() - t
        print(f"package: {len(result.objects)} files, {data_bytes / 1e9:.2f} GB of content, "
              f"{result.size / 1e9:.2f} GB zip, manifest {len(result.manifest) / 1e3:.0f} kB")
        print(f"build (hash + zip + manifest + XSD + seal + timestamp): {elapsed:.1f} s = {rate / 1e6:.0f} MB/s")
        print(f"hashlib.sha512 alone on this machine:                    {sha_rate / 1e6:.0f} MB/s")
        print(f"ratio build / sha512: {rate / sha_rate:.2f} (target >= 0.5)")
        print(f"ratio build / plain sequential write of the same bytes: {rate / write_rate:.2f} "
              "(a package is written once: the disk bounds it when it is slower than SHA-512)")
        print(f"RSS: {rss_before:.0f} MB before the build, peak {peak:.0f} MB during it: growth "
              f"{peak - rss_before:.0f} MB (target < 100 MB); process lifetime peak {peak_rss_mb():.0f} MB")
        print(f"verify_package: {verify_s:.1f} s, problems: {len(problems)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

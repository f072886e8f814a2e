"""Sealed SEDA package of 1,000 files / 2 GB: time, ratio to this machine's SHA-512 throughput, peak RSS growth.

The files are stored first in a FilesystemBlobStore (``put``: streamed, SHA-256, fsync), then
``build_package`` takes them as the ``sae`` step does (``blob_source``: the blob's local file, hashed
in 8 MB blocks and copied into the package by the kernel) and writes a sealed zip (SHA-512 of every
byte, XSD-validated manifest, CAdES seal, internal RFC 3161 timestamp); ``verify_package`` reads it back.
The reference is ``hashlib.sha512`` over 1 GB in memory, measured in the same run (the faster of 1 MB
and 8 MB updates): building a package has to hash every byte once, so the ratio says how close to
that floor the whole pipeline (read, hash, CRC-32, copy) gets.  Targets: ratio >= 0.5, RSS growth < 100 MB.

The disk is measured too: a plain write of the same number of bytes (8 MB blocks, no fsync, as the
build), then its fsync; the kernel's dirty pages are sampled during the build, with the thresholds
at which background writeback starts and writers are throttled (half-way to ``dirty_ratio``), and the
package's own fsync after the build is timed: whether the disk slowed the build down is printed.  ``--stream`` builds from the blobs' chunks instead (the path
of stores without local files, such as S3).

Run: ``python bench/bench_archive.py [--files 1000] [--total-mb 2048] [--dir /tmp] [--stream]``.
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
from flowbus.archive.package import SourceFile, blob_source, build_package  # noqa: E402
from flowbus.archive.seal import InternalTimestamper, Sealer  # noqa: E402
from flowbus.archive.verify import verify_package  # noqa: E402
from flowbus.blobs.filesystem import FilesystemBlobStore  # noqa: E402
from flowbus.signature.pki import make_test_pki  # noqa: E402

XSD = ROOT / ".." / "shared" / "schemas" / "seda"
CHUNK = 1024 * 1024
BLOCK = 8 * CHUNK


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def meminfo_mb(*fields: str) -> float:
    """Sum of /proc/meminfo fields, in MB."""
    with open("/proc/meminfo") as f:
        values = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return sum(values[name] for name in fields) * 1024 / 1e6


def dirty_thresholds_mb() -> tuple[float, float]:
    """Approximate (background writeback, writer throttling) dirty-page thresholds, in MB.

    The kernel takes its ratios of the "dirtyable" memory; MemAvailable is close to it.
    """
    def vm(name: str) -> int:
        return int(Path(f"/proc/sys/vm/{name}").read_text())
    available = meminfo_mb("MemAvailable")
    background = vm("dirty_background_bytes") / 1e6 or available * vm("dirty_background_ratio") / 100
    throttle = vm("dirty_bytes") / 1e6 or available * vm("dirty_ratio") / 100
    return background, throttle


class Sampler:
    """Highest RSS and dirty + writeback pages seen every 20 ms while running."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self.dirty = meminfo_mb("Dirty", "Writeback")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_mb())
        self.dirty = max(self.dirty, meminfo_mb("Dirty", "Writeback"))

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


async def generate(store: FilesystemBlobStore, files: int, total: int) -> list[tuple[str, int]]:
    """``files`` blobs of ``total`` bytes in all: a PDF header, then pseudo-random 1 MB blocks varied per file."""
    block = os.urandom(CHUNK)
    size = total // files
    blobs = []
    for i in range(files):
        async def chunks(i: int = i):
            head = b"%PDF-1.7\n%" + str(i).encode() + b"\n"
            yield head
            left = size - len(head)
            salt = i.to_bytes(4, "big")
            while left > 0:
                n = min(left, CHUNK)
                yield salt + block[4:n] if n > 4 else block[:n]
                left -= n
        ref = await store.put(chunks())
        blobs.append((ref.key, ref.size))
    return blobs


def write_rates(directory: Path, total: int) -> tuple[float, float]:
    """(page-cache write, write + fsync) bytes per second of a plain new file of ``total`` bytes in 8 MB blocks."""
    block = os.urandom(BLOCK)
    path = directory / "write-probe"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = total
        while left > 0:
            left -= f.write(memoryview(block)[:min(left, BLOCK)])
        written = time.perf_counter()
        os.fsync(f.fileno())
    synced = time.perf_counter()
    path.unlink()
    return total / (written - start), total / (synced - start)


def sha512_throughput(total: int) -> float:
    """Bytes per second of hashlib.sha512 over ``total`` bytes in memory: the faster of 1 MB and 8 MB updates."""
    block = memoryview(os.urandom(BLOCK))
    best = 0.0
    for size in (CHUNK, BLOCK):
        h = hashlib.sha512()
        start = time.perf_counter()
        for _ in range(total // size):
            h.update(block[:size])
        best = max(best, total / (time.perf_counter() - start))
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--total-mb", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--stream", action="store_true", help="build from the blobs' chunks, not their local files")
    args = parser.parse_args()
    total = args.total_mb * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="flowbus-bench-archive-", dir=args.dir))
    try:
        pki = make_test_pki(work / "pki")
        store = FilesystemBlobStore(work / "blobs")
        print(f"storing {args.files} blobs, {total / 1e9:.2f} GB in {work} …", flush=True)
        t = time.perf_counter()
        blobs = await generate(store, args.files, total)
        gen_s = time.perf_counter() - t
        print(f"  stored in {gen_s:.1f} s ({total / gen_s / 1e6:.0f} MB/s: put = SHA-256 + write + fsync per blob)")
        cache_rate, disk_rate = write_rates(work, total)
        print(f"  plain write of {total / 1e9:.2f} GB: {cache_rate / 1e6:.0f} MB/s into the page cache, "
              f"{disk_rate / 1e6:.0f} MB/s with its fsync (the disk)", flush=True)
        sha_rate = sha512_throughput(1024 * CHUNK)
        now = datetime.now(UTC)
        sources = [blob_source(store, key, f"piece-{i:04d}.pdf", f"Pièce {i + 1}", size, now)
                   for i, (key, size) in enumerate(blobs)]
        if args.stream:
            sources = [SourceFile(s.filename, s.title, s.chunks, s.size, s.last_modified) for s in sources]
        transfer = seda.Transfer(message_id="BENCH-1", date=now, title="Bench 1000 pièces",
                                 archival_agency="AD34", transferring_agency="21340000000017")
        sealer = Sealer(pki.seal, InternalTimestamper(pki.tsa))
        seda.schema(XSD, "2.1")  # compile once, as a running server does
        os.sync()
        background, throttle = dirty_thresholds_mb()
        rss_before, dirty_before = rss_mb(), meminfo_mb("Dirty", "Writeback")
        t = time.perf_counter()
        with Sampler() as sampler:
            result = await build_package(work / "package.zip", transfer, sources, sealer=sealer, xsd_dir=XSD)
        elapsed = time.perf_counter() - t
        data_bytes = sum(o.size for o in result.objects)
        rate = data_bytes / elapsed
        t = time.perf_counter()
        with open(result.path, "rb") as f:
            os.fsync(f.fileno())
        fsync_s = time.perf_counter() - t
        t = time.perf_counter()
        problems = verify_package(result.path)
        verify_s = time.perf_counter() - t
        path = "blob chunks (streamed)" if args.stream else "local blob files (hashed in 8 MB blocks, kernel copy)"
        print(f"package: {len(result.objects)} files from {path}, {data_bytes / 1e9:.2f} GB of content, "
              f"{result.size / 1e9:.2f} GB zip, manifest {len(result.manifest) / 1e3:.0f} kB")
        print(f"build (hash + zip + manifest + XSD + seal + timestamp): {elapsed:.1f} s = {rate / 1e6:.0f} MB/s")
        print(f"hashlib.sha512 alone on this machine:                    {sha_rate / 1e6:.0f} MB/s")
        print(f"ratio build / sha512: {rate / sha_rate:.2f} (target >= 0.5)")
        print(f"ratio build / plain write of the same bytes: {rate / cache_rate:.2f} (page cache), "
              f"{rate / disk_rate:.2f} (with fsync)")
        if sampler.dirty >= (background + throttle) / 2:
            verdict = "writers were throttled (balance_dirty_pages): the disk bounds the build"
        elif sampler.dirty >= background:
            verdict = "background writeback ran during the build, competing for the CPUs and the disk"
        else:
            verdict = "no writeback during the build: the package waited in the page cache"
        print(f"dirty + writeback pages: {dirty_before:.0f} MB before, peak {sampler.dirty:.0f} MB during the build; "
              f"writeback starts at ~{background:.0f} MB, throttling from ~{(background + throttle) / 2:.0f} MB: "
              f"{verdict}")
        print(f"fsync of the package after the build: {fsync_s:.1f} s more (build + fsync: "
              f"{data_bytes / (elapsed + fsync_s) / 1e6:.0f} MB/s, ratio {data_bytes / (elapsed + fsync_s) / sha_rate:.2f})")
        print(f"RSS: {rss_before:.0f} MB before the build, peak {sampler.peak:.0f} MB during it: growth "
              f"{sampler.peak - rss_before:.0f} MB (target < 100 MB); process lifetime peak {peak_rss_mb():.0f} MB")
        print(f"verify_package: {verify_s:.1f} s, problems: {len(problems)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

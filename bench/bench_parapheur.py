"""i-Parapheur connector figures, measured against the in-process simulator over loopback HTTP.

1. A whole folder cycle (create + start + signer approves with PAdES + PREMIS + ZIP), compared
   with PAdES signing alone measured in the same run (the rest is protocol overhead).
2. The idempotency lookup before creating a folder (``find_folder``: the desk's lists scanned
   by pages of 100) with 10 and with 1,000 folders on the desk.

Run: ``python bench/bench_parapheur.py [--folders 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowbus.signature.iparapheur import IParapheurClient, UploadFile  # noqa: E402
from flowbus.signature.iparapheur_sim import IParapheurSimulator  # noqa: E402
from flowbus.signature.pades import make_test_pdf, sign_pdf  # noqa: E402


async def run(folders: int) -> None:
    pdf = make_test_pdf(3)
    async with IParapheurSimulator() as sim, aiohttp.ClientSession() as http:
        client = IParapheurClient(sim.url, "flowbus", "flowbus-secret", tenant_id="t-collectivite",
                                  desk_id="d-secretariat", session=http)
        await client.token()
        t0 = time.perf_counter()
        for _ in range(folders):
            sign_pdf(pdf, sim.signer.identity)
        sign_only = (time.perf_counter() - t0) / folders

        t0 = time.perf_counter()
        for i in range(folders):
            created = await client.create_folder(f"Bench {i}", "Pades", "Délibération",
                                                 [UploadFile("acte.pdf", pdf, "application/pdf", True)])
            await client.start_folder(created["id"])
            sim.approve(created["id"])
            summary = await client.premis(created["id"])
            assert summary.state == "finished"
            await client.zip(created["id"])
        cycle = (time.perf_counter() - t0) / folders
        print(f"folder cycle (create, start, PAdES approve, PREMIS, ZIP): {cycle * 1000:.1f} ms/folder")
        print(f"PAdES signing alone (same PDF, same key):              {sign_only * 1000:.1f} ms")
        print(f"ratio cycle / signing: {cycle / sign_only:.2f}  (protocol overhead {1000 * (cycle - sign_only):.1f} ms)")

    for desk_size in (10, 1000):
        async with IParapheurSimulator() as sim, aiohttp.ClientSession() as http:
            client = IParapheurClient(sim.url, "flowbus", "flowbus-secret", tenant_id="t-collectivite",
                                      desk_id="d-secretariat", session=http)
            doc = [UploadFile("acte.pdf", b"%PDF-1.4 bench", "application/pdf", True)]
            for i in range(desk_size):
                created = await client.create_folder(f"Dossier {i}", "Pades", "Délibération", doc)
                if i % 2:
                    await client.start_folder(created["id"])
            rounds = 5
            t0 = time.perf_counter()
            for _ in range(rounds):
                assert await client.find_folder("absent") is None  # worst case: every list scanned
            miss = (time.perf_counter() - t0) / rounds
            print(f"find_folder miss with {desk_size:>4} folders on the desk: {miss * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folders", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.folders))


if __name__ == "__main__":
    main()

"""Operator commands: ``flowbus archive verify PACKAGE`` and ``flowbus archive build``.

``verify`` checks a sealed SEDA package offline (file digests, manifest, seal, timestamp),
prints one line per problem and exits with 1 when anything is wrong (0 when intact, 2 when
the arguments are unusable).  ``build`` makes a sealed package from files on disk (demo,
manual transfers); PKCS#12 passwords come from environment variables, never the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    archive = subparsers.add_parser("archive", help="SEDA packages: verify, build")
    sub = archive.add_subparsers(dest="archive_command", metavar="ACTION", required=True)

    verify = sub.add_parser("verify", help="check a sealed package offline and name what is wrong")
    verify.add_argument("package", metavar="PACKAGE", type=Path)
    verify.add_argument("--ca", metavar="PEM", type=Path, action="append",
                        help="trusted root(s), PEM: also require the seal and the TSA to chain to them")
    verify.add_argument("--xsd-dir", type=Path, help="also validate manifest.xml against the SEDA XSD in this folder")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=cmd_verify)

    build = sub.add_parser("build", help="build a sealed SEDA package from files")
    build.add_argument("output", metavar="OUT", type=Path)
    build.add_argument("files", metavar="FILE", type=Path, nargs="+")
    build.add_argument("--title", required=True)
    build.add_argument("--archival-agency", required=True)
    build.add_argument("--transferring-agency", required=True)
    build.add_argument("--seda-version", choices=("2.1", "2.2"), default="2.1")
    build.add_argument("--format", choices=("zip", "tar"), default="zip")
    build.add_argument("--seal-p12", type=Path, required=True)
    build.add_argument("--tsa-p12", type=Path, help="internal timestamp signer (PKCS#12 with timestamping usage)")
    build.add_argument("--tsa-url", help="RFC 3161 timestamp authority")
    build.add_argument("--password-env", metavar="VAR", default="FLOWBUS_P12_PASSWORD",
                       help="environment variable holding the PKCS#12 password(s)")
    build.add_argument("--xsd-dir", type=Path)
    build.set_defaults(func=cmd_build)


def cmd_verify(args: argparse.Namespace) -> int:
    from cryptography import x509

    from flowbus.archive.verify import verify_report
    trusted = None
    if args.ca:
        try:
            trusted = [c for path in args.ca for c in x509.load_pem_x509_certificates(path.read_bytes())]
        except (OSError, ValueError) as exc:
            print(f"flowbus archive verify: error [ca]: cannot read the trusted certificates: {exc}", file=sys.stderr)
            return 2
    report = verify_report(args.package, trusted=trusted, xsd_dir=args.xsd_dir)
    if args.json:
        print(json.dumps({"package": str(args.package), "ok": not report.problems, "files": report.files,
                          "seal": report.seal_subject, "timestamp": report.timestamp, "tsa": report.tsa,
                          "problems": [{"where": p.where, "what": p.what} for p in report.problems]},
                         ensure_ascii=False, indent=2))
    else:
        for problem in report.problems:
            print(f"FAIL {problem}")
        if not report.problems:
            print(f"OK {args.package}: {report.files} files, digests match the manifest; sealed by "
                  f"{report.seal_subject}; timestamped {report.timestamp} by {report.tsa}")
    return 1 if report.problems else 0


async def cmd_build(args: argparse.Namespace) -> int:
    from flowbus.archive import package, seal, seda
    from flowbus.errors import FlowbusError
    password = os.environ.get(args.password_env)
    try:
        key = seal.key_for_settings(args.seal_p12.read_bytes(), password, prefix="seal")
        if args.tsa_url:
            from flowbus.outbound import OutboundPolicy
            from flowbus.settings import Settings
            stamper: seal.Timestamper = seal.HttpTimestamper(args.tsa_url,
                                                             outbound=OutboundPolicy.from_settings(Settings()))
        else:
            tsa_key = seal.key_for_settings(args.tsa_p12.read_bytes(), password, prefix="tsa") \
                if args.tsa_p12 else key
            stamper = seal.InternalTimestamper(tsa_key)
        now = datetime.now(UTC)
        transfer = seda.Transfer(message_id=f"FLOWBUS-{now:%Y%m%d%H%M%S}", date=now, title=args.title,
                                 archival_agency=args.archival_agency, transferring_agency=args.transferring_agency,
                                 originating_agency=args.transferring_agency, version=args.seda_version)
        sources = [package.SourceFile(p.name, p.name, _file_chunks(p), p.stat().st_size,
                                      datetime.fromtimestamp(p.stat().st_mtime, UTC)) for p in args.files]
        result = await package.build_package(args.output, transfer, sources, sealer=seal.Sealer(key, stamper),
                                             xsd_dir=args.xsd_dir, fmt=args.format,
                                             package_sha256=True)
    except (FlowbusError, OSError) as exc:
        field = getattr(exc, "field", None)
        print(f"flowbus archive build: error{f' [{field}]' if field else ''}: {exc}", file=sys.stderr)
        return 2
    print(f"{result.path}: {len(result.objects)} files, {result.size} bytes, sha256 {result.sha256}")
    return 0


def _file_chunks(path: Path):
    async def chunks():
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, 1024 * 1024):
                yield chunk
    return chunks

"""Operator commands: ``flowbus sign`` and ``flowbus verify``.

``flowbus sign --format xades-pes|pades|cades --p12 FILE [--password-env VAR] IN OUT``
``flowbus verify FILE [--detached SIG] [--ca PEM] [--at DATETIME] [--json]``

The PKCS#12 password is read from the environment variable named by ``--password-env``
(never from the command line, where ``ps`` and shell history would show it).  ``verify``
prints one block per signature and exits with 1 when a signature is invalid, the content was
altered or no signature was found; unreadable input exits with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

FORMATS = ("xades-pes", "pades", "cades")
STATUS_FR = {"trusted": "de confiance", "untrusted": "non reconnue", "expired": "expirée", "unknown": "non vérifiée"}


def register(subparsers: argparse._SubParsersAction) -> None:
    sign = subparsers.add_parser("sign", help="sign a file (XAdES PES, PAdES, CAdES detached)",
                                 description="Sign IN into OUT with the key of a PKCS#12 file.")
    sign.add_argument("--format", required=True, choices=FORMATS)
    sign.add_argument("--p12", required=True, type=Path, help="PKCS#12 file (.p12/.pfx) with key and certificate")
    sign.add_argument("--password-env", metavar="VAR",
                      help="name of the environment variable holding the PKCS#12 password")
    sign.add_argument("--tsa-url", help="RFC 3161 timestamp authority (PAdES B-T, CAdES-T)")
    sign.add_argument("--visible", action="store_true", help="PAdES: draw a signature block on the last page")
    sign.add_argument("--role", help="XAdES: claimed role (e.g. Ordonnateur)")
    sign.add_argument("input", metavar="IN", type=Path)
    sign.add_argument("output", metavar="OUT", type=Path, help="signed file (the .p7s signature for cades)")
    sign.set_defaults(func=cmd_sign)

    verify = subparsers.add_parser("verify", help="verify the signatures of a file",
                                   description="Check every signature of FILE (PES/XML, PDF, or with --detached).")
    verify.add_argument("file", metavar="FILE", type=Path)
    verify.add_argument("--detached", metavar="SIG", type=Path, help="detached CMS signature (.p7s) of FILE")
    verify.add_argument("--ca", metavar="PEM", type=Path, action="append",
                        help="trusted certificate(s), PEM; without it the chain is not judged")
    verify.add_argument("--at", metavar="DATETIME",
                        help="judge certificate validity at this ISO date instead of now (e.g. the signing date)")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(func=cmd_verify)


def _fail(command: str, exc: Exception, code: int = 2) -> int:
    field = getattr(exc, "field", None)
    where = f" [{field}]" if field else ""
    print(f"flowbus {command}: error{where}: {exc}", file=sys.stderr)
    return code


def _read(path: Path, what: str) -> bytes:
    from flowbus.errors import PermanentError
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PermanentError(f"cannot read the {what} {path}: {exc.strerror}", field=what) from None


def cmd_sign(args: argparse.Namespace) -> int:
    from flowbus.errors import FlowbusError, PermanentError
    from flowbus.signature.keys import load_pkcs12
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            return _fail("sign", PermanentError(f"the environment variable {args.password_env} is not set",
                                                field="password_env"))
    try:
        key = load_pkcs12(_read(args.p12, "p12"), password)
        data = _read(args.input, "input")
        if args.format == "xades-pes":
            from flowbus.signature.xades import sign_pes
            signed = sign_pes(data, key, role=args.role)
        elif args.format == "pades":
            from flowbus.signature.pades import VisibleSignature, sign_pdf
            signed = sign_pdf(data, key, tsa_url=args.tsa_url, visible=VisibleSignature() if args.visible else None)
        else:
            from flowbus.signature.cades import sign_cades
            signed = sign_cades(data, key, tsa_url=args.tsa_url)
    except FlowbusError as exc:
        if exc.field == "pkcs12_password" and not args.password_env:
            exc.hint = "pass --password-env VAR with the password in $VAR"
        return _fail("sign", exc)
    # Write next to the target, then rename: an interrupted run never leaves half a file.
    tmp = args.output.with_name(args.output.name + ".part")
    try:
        tmp.write_bytes(signed)
        os.replace(tmp, args.output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return _fail("sign", PermanentError(f"cannot write {args.output}: {exc.strerror}", field="output"))
    print(f"signed {args.input} -> {args.output} ({args.format}, signer: {key.subject})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from flowbus.errors import FlowbusError, PermanentError
    from flowbus.signature.verify import load_certificates, verify
    # pyHanko logs its findings (with tracebacks) on top of returning them; this command reports them.
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
    logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)
    try:
        now = None
        if args.at:
            try:
                now = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
            except ValueError:
                raise PermanentError(f"--at {args.at!r} is not an ISO date", field="at") from None
            now = now if now.tzinfo else now.replace(tzinfo=UTC)
        trusted = None
        if args.ca:
            trusted = [c for path in args.ca for c in load_certificates(_read(path, "ca"))]
        detached = _read(args.detached, "detached") if args.detached else None
        results = verify(_read(args.file, "file"), detached=detached, trusted=trusted, now=now)
    except FlowbusError as exc:
        return _fail("verify", exc)
    if args.json:
        print(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
    elif not results:
        print(f"{args.file}: no signature found")
    for number, r in enumerate(results, start=1) if not args.json else ():
        verdict = "VALID" if r.ok else "INVALID"
        print(f"signature {number} ({r.format}{', ' + r.reference if r.reference else ''}): {verdict}")
        print(f"  signer:       {r.signer or '?'}")
        print(f"  signing time: {r.signed_at.isoformat() if r.signed_at else '?'}")
        print(f"  certificate:  {r.chain_status} ({STATUS_FR[r.chain_status]})")
        print(f"  content:      {'intact' if r.intact else 'ALTERED or signature value wrong'}")
        if r.policy:
            print(f"  policy:       {r.policy}")
        for error in r.errors:
            print(f"  error:        {error}")
    return 0 if results and all(r.ok for r in results) else 1

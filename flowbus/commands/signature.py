"""Operator commands: ``flowbus sign`` and ``flowbus verify``.

``flowbus sign --format xades-pes|pades|cades --p12 FILE [--password-env VAR] IN OUT``
``flowbus verify FILE [--detached SIG] [--ca PEM] [--at DATETIME] [--json]``

The PKCS#12 password is read from the environment variable named by ``--password-env``
(never from the command line, where ``ps`` and shell history would show it).  ``verify``
prints one block per signature, headed by its ETSI EN 319 102-1 indication and a French
explanation, and exits with the worst of them: 0 TOTAL-PASSED, 1 TOTAL-FAILED, 2
INDETERMINATE.  No signature found exits with 1; unreadable input (nothing could be judged)
with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowbus.signature.base import Verification

FORMATS = ("xades-pes", "pades", "cades")
STATUS_FR = {"trusted": "de confiance", "untrusted": "non reconnue", "expired": "hors validité",
             "unknown": "non jugée, aucune liste de confiance"}
EXIT_CODES = {"TOTAL-PASSED": 0, "TOTAL-FAILED": 1, "INDETERMINATE": 2}  # by ETSI main indication


def _outbound():
    """The server's outbound policy (FLOWBUS_OUTBOUND_ALLOW) for the TSA named on the command line."""
    from flowbus.outbound import OutboundPolicy
    from flowbus.settings import Settings
    return OutboundPolicy.from_settings(Settings())


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
    verify.add_argument("--ca", "--trust", dest="ca", metavar="PEM", type=Path, action="append",
                        help="trust anchor(s), PEM or DER, in addition to the trust list")
    verify.add_argument("--trust-dir", metavar="DIR", type=Path,
                        help="trust list: a folder of CA certificates (default: <config dir>/trust, see its README); "
                             "with no trusted CA no chain is found and the result is at best INDETERMINATE "
                             "(NO_CERTIFICATE_CHAIN_FOUND)")
    verify.add_argument("--at", metavar="DATETIME",
                        help="validation time: judge the certificates at this ISO date instead of now (e.g. the "
                             "signing date); still needs --ca to pass")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(func=cmd_verify)


def _config_trust_dir() -> Path:
    try:
        from flowbus.settings import Settings
        return Settings().trust_dir
    except Exception:  # noqa: BLE001 - a broken environment must not stop a verification: no trust list then
        return Path("config") / "trust"


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
            signed = sign_pdf(data, key, tsa_url=args.tsa_url, visible=VisibleSignature() if args.visible else None,
                              outbound=_outbound())
        else:
            from flowbus.signature.cades import sign_cades
            signed = sign_cades(data, key, tsa_url=args.tsa_url, outbound=_outbound())
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
    from flowbus.signature.verify import load_certificates, load_trust_dir, verify
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
        trust_dir = args.trust_dir or _config_trust_dir()
        trusted = load_trust_dir(trust_dir) + [c for path in args.ca or [] for c in load_certificates(_read(path, "ca"))]
        trusted = trusted or None
        detached = _read(args.detached, "detached") if args.detached else None
        results = verify(_read(args.file, "file"), detached=detached, trusted=trusted, now=now)
    except FlowbusError as exc:
        return _fail("verify", exc)
    if args.json:
        print(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
    else:
        _print_results(args.file, results, at_given=now is not None)
    return verdict_exit_code(results)


def verdict_exit_code(results: list[Verification]) -> int:
    """The worst indication decides: 1 when one signature is TOTAL-FAILED (or none was found), else 2 when one
    is INDETERMINATE, else 0."""
    if not results:
        return 1
    codes = {EXIT_CODES[str(r.status.indication)] for r in results}
    return 1 if 1 in codes else max(codes)


def _print_results(file: Path, results: list[Verification], *, at_given: bool) -> None:
    from flowbus.signature.explain import french_date, headline
    if not results:
        print(f"{file} : aucune signature trouvée")
        return
    for number, r in enumerate(results, start=1):
        print(f"signature {number} ({r.format}{', ' + r.reference if r.reference else ''}) : "
              f"{headline(r, at_given=at_given)}")
        print(f"  signataire :        {r.signer or '?'}")
        print(f"  date de signature : {r.signed_at.isoformat() if r.signed_at else '?'} (déclarée, non prouvée)")
        if r.certificate is not None:
            print(f"  certificat :        valide du {french_date(r.certificate.not_valid_before_utc)} "
                  f"au {french_date(r.certificate.not_valid_after_utc)}")
        print(f"  chaîne :            {r.chain_status} ({STATUS_FR[r.chain_status]})")
        if r.chain is not None:
            print(f"  jugée au :          {r.chain.at.isoformat()}{' (--at)' if at_given else ' (maintenant)'}")
        print(f"  contenu :           {'intact' if r.intact else 'ALTÉRÉ, ou valeur de signature fausse'}")
        if r.policy:
            print(f"  politique :         {r.policy}")
        for error in r.errors:
            print(f"  détail :            {error}")

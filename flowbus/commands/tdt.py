"""Télétransmission commands: ``pes inspect``, ``pes acquit``, ``actes parse``, ``tdt poll``, ``s2low-sim``."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any


def pes_inspect_json(data: bytes) -> dict[str, Any]:
    """The index fields of a PES_Aller as ``pes inspect`` prints them (PES element names as keys)."""
    from flowbus.connectors.tdt.helios import pes_errors
    index, errs = pes_errors(data)
    if index is None:
        raise errs[-1]
    return {
        "NomFic": index.nom_fic, "TypFic": index.typ_fic, "encoding": index.encoding,
        "IdColl": index.id_coll, "DteStr": index.dte_str, "IdPost": index.id_post, "CodCol": index.cod_col,
        "CodBud": index.cod_bud, "LibelleColBud": index.libelle_col_bud, "exercice": index.exercice,
        "InfoDematerialisee": index.info_dematerialisee,
        "nb_bordereaux": index.nb_bordereaux,
        "bordereaux": [{"Id": b.id, "domaine": b.domain, "TypBord": b.type, "IdBord": b.id_bord,
                        "exercice": b.exercice, "nb_pieces": b.nb_pieces, "signed": b.signed}
                       for b in index.bordereaux],
        "nb_pj": index.nb_pj,
        "pj": [{"IdUnique": p.id_unique, "NomPJ": p.nom_pj, "MIMEType": p.media_type, "size": p.size}
               for p in index.pjs],
        "signed_global": index.signed_global, "signed": index.signed,
        "errors": [{"field": e.field, "message": e.message} for e in errs],
    }


def cmd_pes_inspect(args: argparse.Namespace) -> int:
    from flowbus.errors import ValidationError
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        out = pes_inspect_json(data)
    except ValidationError as exc:
        print(f"error: {args.file}: {exc.field}: {exc.message}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 1 if args.check and out["errors"] else 0


def pes_acquit_json(data: bytes) -> dict[str, Any]:
    """A PES_ACQUIT as ``pes acquit`` prints it: the verdict (every EtatAck = 1) and each error with what it points
    to (tdt.md §6.5), PES element names as keys; ``NumBord`` is the ``IdBord`` of the PES_Aller's bordereau.

    Raises:
        FlowbusError: not XML, or not a PES_ACQUIT / PES_NONACQUIT (French message).
    """
    from flowbus import schemas
    from flowbus.connectors.tdt.helios import DOMAINE_ACK, parse_pes_acquit
    acquit = parse_pes_acquit(data)
    schema_valid: bool | None = None
    schema_errors: list[str] = []
    if acquit.root == "PES_ACQUIT":  # the autonomous acquit XSD declares no PES_NONACQUIT
        from lxml import etree
        schema = schemas.pes_acquit()
        schema_valid = bool(schema.validate(etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False,
                                                                                            no_network=True))))
        schema_errors = [f"ligne {e.line} : {e.message}" for e in list(schema.error_log)[:20]]
    return {
        "root": acquit.root, "NomFic": acquit.nom_fic, "TypFic": acquit.typ_fic, "IdPost": acquit.id_post,
        "IdColl": acquit.id_coll, "CodCol": acquit.cod_col, "CodBud": acquit.cod_bud,
        "accepted": acquit.ok, "verdict": "accepté" if acquit.ok else "refusé",
        "elements": [{"DomaineAck": e.domaine, "domaine": DOMAINE_ACK.get(e.domaine), "EtatAck": int(e.ok),
                      "NumBord": e.num_bord, "ExerciceBord": e.exercice, "IdMarche": e.id_marche,
                      "IdUnique": e.id_unique, "nb_errors": len(e.errors)} for e in acquit.elements],
        "errors": [{"DomaineAck": i.domaine, "domaine": DOMAINE_ACK.get(i.domaine), "EtatAck": int(i.element_ok),
                    "NumAnoAck": i.code, "LibelleAnoAck": i.label, "NumBord": i.num_bord,
                    "ExerciceBord": i.exercice, "IdMarche": i.id_marche, "IdUnique": i.id_unique,
                    "NumPiece": i.num_piece, "NumLigne": i.num_ligne, "message": i.text} for i in acquit.issues],
        "schema_valid": schema_valid, "schema_errors": schema_errors,
    }


_OS_WORDS = {errno.ENOENT: "fichier introuvable", errno.EACCES: "accès refusé", errno.EISDIR: "c'est un dossier"}


def cmd_pes_acquit(args: argparse.Namespace) -> int:
    """Exit 0 when the PES is accepted (every EtatAck = 1), 1 when refused, 2 when the file cannot be read."""
    from flowbus.errors import FlowbusError
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        why = _OS_WORDS.get(exc.errno or 0, exc.strerror or str(exc))
        print(f"erreur : impossible de lire le fichier {args.file} : {why}", file=sys.stderr)
        return 2
    try:
        out = pes_acquit_json(data)
    except FlowbusError as exc:
        print(f"erreur : {args.file} n'est pas un PES_ACQUIT lisible : {exc.message}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    if out["schema_valid"] is False:
        print(f"attention : {args.file} n'est pas conforme au schéma PES_V2_Acquit_Autonome_V2.xsd "
              f"({len(out['schema_errors'])} écart(s), voir schema_errors) ; le verdict est lu quand même",
              file=sys.stderr)
    return 0 if out["accepted"] else 1


def cmd_actes_parse(args: argparse.Namespace) -> int:
    from flowbus.connectors.tdt.actes_messages import parse_message
    from flowbus.errors import FlowbusError
    try:
        msg = parse_message(Path(args.file).read_bytes())
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except FlowbusError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    out = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(msg).items()}
    out["reason"] = msg.reason
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0


async def cmd_tdt_poll(args: argparse.Namespace) -> int:
    """Fetch unread préfecture letters and PES_Retour of one entity into documents (run it periodically)."""
    from flowbus import log as flog
    from flowbus.app import build
    from flowbus.connectors.tdt.inbox import collect_pes_retours, collect_prefecture_letters
    from flowbus.errors import FlowbusError
    from flowbus.settings import Settings
    settings = Settings()
    flog.configure(settings.log_format, settings.log_level)
    rt = await build(settings)
    out: dict[str, Any] = {}
    try:
        if args.letters_flow:
            out["letters"] = await collect_prefecture_letters(rt, instance_id=args.actes_instance, entity_id=args.entity,
                                                              flow_id=args.letters_flow, start=not args.no_start)
        if args.retours_flow:
            out["pes_retours"] = await collect_pes_retours(rt, instance_id=args.helios_instance, entity_id=args.entity,
                                                           flow_id=args.retours_flow, start=not args.no_start)
    except FlowbusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await rt.close()
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_s2low_sim(args: argparse.Namespace) -> int:
    from flowbus.connectors.tdt import s2low_sim
    argv = ["--host", args.host, "--port", str(args.port), "--delay-ar", str(args.delay_ar),
            "--outcome", args.outcome]
    if args.tls_cert:
        argv += ["--tls-cert", args.tls_cert, "--tls-client-ca", args.tls_client_ca or ""]
    return s2low_sim.main(argv)


def register(sub: Any) -> None:
    pes = sub.add_parser("pes", help="PES V2 (Hélios)")
    pes_sub = pes.add_subparsers(dest="pes_command", metavar="COMMAND")
    inspect = pes_sub.add_parser("inspect", help="print the index fields of a PES_Aller as JSON")
    inspect.add_argument("file")
    inspect.add_argument("--check", action="store_true", help="exit 1 when S²LOW's pre-send checks fail")
    inspect.set_defaults(func=cmd_pes_inspect)
    acquit = pes_sub.add_parser("acquit", help="read a PES_ACQUIT: verdict and every error with its bordereau, "
                                               "pièce and ligne, as JSON (exit 0 accepted, 1 refused, 2 unreadable)")
    acquit.add_argument("file")
    acquit.set_defaults(func=cmd_pes_acquit)

    actes = sub.add_parser("actes", help="ACTES (contrôle de légalité)")
    actes_sub = actes.add_subparsers(dest="actes_command", metavar="COMMAND")
    parse = actes_sub.add_parser("parse", help="parse an ACTES message (AR, anomaly, letter…) to JSON")
    parse.add_argument("file")
    parse.set_defaults(func=cmd_actes_parse)

    tdt = sub.add_parser("tdt", help="télétransmission (S²LOW)")
    tdt_sub = tdt.add_subparsers(dest="tdt_command", metavar="COMMAND")
    poll = tdt_sub.add_parser("poll", help="fetch unread préfecture letters and PES_Retour of an entity as documents")
    poll.add_argument("--entity", required=True)
    poll.add_argument("--actes-instance", default="s2low-actes")
    poll.add_argument("--letters-flow", help="flow of the documents created for préfecture letters")
    poll.add_argument("--helios-instance", default="s2low-helios")
    poll.add_argument("--retours-flow", help="flow of the documents created for PES_Retour files")
    poll.add_argument("--no-start", action="store_true", help="create the documents without starting their flow")
    poll.set_defaults(func=cmd_tdt_poll)

    sim = sub.add_parser("s2low-sim", help="run the S²LOW simulator (demo, tests)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--delay-ar", type=float, default=60.0)
    sim.add_argument("--outcome", choices=["ar", "anomaly", "refused"], default="ar")
    sim.add_argument("--tls-cert", help="server certificate and key (PEM): serve HTTPS")
    sim.add_argument("--tls-client-ca", help="CA of the client certificates (PEM), required as S²LOW does")
    sim.set_defaults(func=cmd_s2low_sim)

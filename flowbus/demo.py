"""``flowbus serve --demo``: every shipped flow run for real against the project's simulators.

The demo starts, in the serving process and on free loopback ports, the protocol-faithful
simulators of the outside systems (S²LOW, i-Parapheur, an SMTP server, an RFC 3161 TSA),
generates a demo PKI under the data directory, and points the *real* connector kinds at them
through API-managed connector instances of the demo entity::

    parapheur        signature/seal        server seal (PAdES for PDFs, XAdES for PES), timestamped by the TSA sim
    parapheur-agent  signature/iparapheur  i-Parapheur simulator, approves by itself after ``approve_after``
    tdt-actes        tdt-actes/s2low       S²LOW simulator, AR after ``transmit + ar`` seconds
    tdt-helios       tdt-helios/s2low      S²LOW simulator, PES_Acquit after the same delays
    mailsec          mailsec/smtp          local SMTP server; links point at the server's base URL
    ged              ged/filesystem        ``<data_dir>/demo-ged``
    sae              sae/store             built-in archive store (sealed SEDA 2.1 packages, timestamps from the TSA
                     simulator), searchable by archivists at ``/archives/``
    publication      the YAML ``test`` instance: the shipped publication step names no ``to`` for
                     notify/smtp and there is no publication site for notify/http

Then one document per shipped flow is created and started.  Everything is idempotent: the
entity and the documents are found again by SIREN and by flow, the instances are replaced
(their URLs change with the simulators' ports).  Waiting steps are checked every
``check_every`` (2 s) instead of the flows' production periods, only in this process.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import structlog

from flowbus.models import Document
from flowbus.signature.textpdf import text_pdf

log = structlog.get_logger(__name__)

DEMO_SIREN = "213502388"
DEMO_NAME = "Commune de Démo"
ACTOR = "demo"
S2LOW_SIREN, S2LOW_DEPARTEMENT = "123456789", "034"
IPARAPHEUR = {"username": "flowbus", "password": "flowbus-secret", "tenant_id": "t-collectivite",
              "desk_id": "d-secretariat", "type": "ty-pades", "subtype": "st-deliberation"}
_LINK = re.compile(r"https?://\S+/mail/[A-Za-z0-9_\-.]+")
_PASSWORD = re.compile(r"^ {4}(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class DemoTiming:
    """How fast the simulated outside world answers (seconds)."""

    approve_after: float = 10.0  # i-Parapheur signs a pending folder after this long
    transmit: float = 2.0  # S²LOW: posted → transmitted
    ar: float = 4.0  # S²LOW: transmitted → AR / PES_Acquit
    check_every: float = 2.0  # waiting steps of the demo process look again this often


@dataclass
class DemoSimulators:
    """The running simulators; ``await stop()`` stops them all."""

    s2low: Any
    iparapheur: Any
    smtp: Any
    tsa: Any
    pki_dir: Path
    pki_password: str
    ged_dir: Path
    timing: DemoTiming
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stopped: bool = False

    async def stop(self) -> None:
        """Stop every simulator (a second call does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        await self.s2low.stop()
        await self.iparapheur.stop()
        await asyncio.to_thread(self.smtp.stop)
        await asyncio.to_thread(self.tsa.stop)
        log.info("demo.simulators_stopped")

    def watch_mail(self, out: Callable[[str], None] = print, every: float = 1.0) -> None:
        """Print each message the SMTP simulator receives (recipient, subject, links): the recipient page."""

        from flowbus.connectors.mailsec.templates import PASSWORD_SUBJECT

        async def watch() -> None:
            seen = 0
            while True:
                received = list(self.smtp.received)
                for msg in received[seen:]:
                    parsed = msg.message()
                    text = msg.text()
                    links = sorted(set(_LINK.findall(text)))
                    extra = f" — page destinataire : {' '.join(links)}" if links else ""
                    if parsed["Subject"] == PASSWORD_SUBJECT:  # a fictitious recipient's mailbox: show it
                        found = _PASSWORD.search(text)
                        extra = f" — mot de passe (boîte simulée) : {found.group(1)}" if found else ""
                    out(f"[courriel] à {', '.join(msg.rcpt_tos)} : « {parsed['Subject']} »{extra}")
                seen = len(received)
                await asyncio.sleep(every)

        self._tasks.append(asyncio.create_task(watch(), name="demo-mail-watch"))


def _demo_pki(directory: Path) -> tuple[Any, Any, str]:
    """The demo PKI (seal and TSA keys), generated once and reused while its certificates are valid."""
    from flowbus.signature.keys import load_pkcs12
    from flowbus.signature.pki import PASSWORD, make_test_pki
    try:
        seal = load_pkcs12((directory / "seal.p12").read_bytes(), PASSWORD)
        tsa = load_pkcs12((directory / "tsa.p12").read_bytes(), PASSWORD)
        return seal, tsa, PASSWORD
    except Exception:  # noqa: BLE001 - missing, unreadable or expired: make a new one
        pki = make_test_pki(directory)
        return pki.seal, pki.tsa, pki.password


async def start_simulators(data_dir: Path, timing: DemoTiming | None = None) -> DemoSimulators:
    """Start S²LOW, i-Parapheur, SMTP and TSA simulators on 127.0.0.1 free ports; generate the demo PKI."""
    from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
    from flowbus.connectors.tdt.s2low_sim import S2lowSimulator
    from flowbus.signature.iparapheur_sim import IParapheurSimulator
    from flowbus.signature.tsa_sim import TsaSimulator

    timing = timing or DemoTiming()
    pki_dir = Path(data_dir) / "demo-pki"
    _seal, tsa_key, password = await asyncio.to_thread(_demo_pki, pki_dir)
    started: list[Callable[[], Any]] = []
    try:
        tsa = TsaSimulator(tsa_key)
        tsa.start()
        started.append(tsa.stop)
        smtp = await asyncio.to_thread(SmtpSimulator().start)
        started.append(smtp.stop)
        s2low = S2lowSimulator(siren=S2LOW_SIREN, departement=S2LOW_DEPARTEMENT, delays={
            "transmit": timedelta(seconds=timing.transmit), "ar": timedelta(seconds=timing.ar),
            "pes_transmit": timedelta(seconds=timing.transmit), "pes_acquit": timedelta(seconds=timing.ar)})
        await s2low.start()
        started.append(s2low.stop)
        ipar = IParapheurSimulator()
        ipar.script(None, "approve", delay=timing.approve_after)
        await ipar.start()
    except BaseException:
        for stop in reversed(started):
            result = stop()
            if asyncio.iscoroutine(result):
                await result
        raise
    ged_dir = Path(data_dir) / "demo-ged"
    ged_dir.mkdir(parents=True, exist_ok=True)
    log.info("demo.simulators_started", s2low=s2low.url, iparapheur=ipar.url, smtp_port=smtp.port, tsa=tsa.url)
    return DemoSimulators(s2low, ipar, smtp, tsa, pki_dir, password, ged_dir, timing)


def instance_specs(sims: DemoSimulators, base_url: str) -> list[dict[str, Any]]:
    """The connector instances of the demo entity: real kinds pointed at the simulators."""
    return [
        {"id": "parapheur", "family": "signature", "kind": "seal",
         "settings": {"p12_path": str(sims.pki_dir / "seal.p12"), "p12_password": sims.pki_password,
                      "tsa_url": sims.tsa.url, "role": "Ordonnateur", "city": "Démo-sur-Mer"}},
        {"id": "parapheur-agent", "family": "signature", "kind": "iparapheur",
         "settings": {"url": sims.iparapheur.url, **IPARAPHEUR}},
        {"id": "tdt-actes", "family": "tdt-actes", "kind": "s2low",
         "settings": {"url": sims.s2low.url, "departement": S2LOW_DEPARTEMENT, "siren": S2LOW_SIREN,
                      "classification_ttl": "1d"}},
        {"id": "tdt-helios", "family": "tdt-helios", "kind": "s2low", "settings": {"url": sims.s2low.url}},
        {"id": "mailsec", "family": "mailsec", "kind": "smtp",
         "settings": {"host": "127.0.0.1", "port": sims.smtp.port, "starttls": False,
                      "from_address": "ne-pas-repondre@demo.flowbus.test", "from_name": DEMO_NAME,
                      "public_base_url": base_url}},
        {"id": "ged", "family": "ged", "kind": "filesystem", "settings": {"directory": str(sims.ged_dir)}},
        {"id": "sae", "family": "sae", "kind": "store",
         "settings": {"seal_p12_path": str(sims.pki_dir / "seal.p12"), "seal_p12_password": sims.pki_password,
                      "tsa_url": sims.tsa.url, "archival_agency": "FRAD000-DEMO",
                      "archival_agreement": "ACCORD-DEMO", "archival_profile": "PROFIL-DEMO"}},
    ]


def accelerate(rt: Any, every: timedelta) -> None:
    """Waiting steps of this process's flows are checked every ``every`` (the flows' files are untouched)."""
    flows = {}
    for flow_id, flow in rt.flows.items():
        steps = tuple(replace(s, wait=replace(s.wait, check_every=min(s.wait.check_every, every)))
                      if s.wait is not None else s for s in flow.steps)
        flows[flow_id] = replace(flow, steps=steps)
    rt.flows = flows


# ---- documents ------------------------------------------------------------------------------


def multipage_pdf(pages: list[list[str]], *, title: str = "") -> bytes:
    """A PDF with one numbered page per list of lines."""
    return text_pdf(pages, title=title, numbered=True)


def pes_aller(nom_fic: str, today: date) -> bytes:
    """A small PES_Aller (one expense bordereau, one piece) that passes S²LOW's pre-send checks once signed."""
    xml = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<n:PES_Aller xmlns:n="http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xad="http://uri.etsi.org/01903/v1.1.1#" Id="PESDEMO">
 <Enveloppe>
  <Parametres><Version V="1"/><TypFic V="PESALR2"/><NomFic V="{nom_fic}"/></Parametres>
  <Emetteur><Sigle V="DEMO"/><Adresse V="1 place de la Mairie 35000 Démo-sur-Mer"/></Emetteur>
  <Recepteur><Sigle V="HELIOS"/><Adresse V="DGFIP"/></Recepteur>
 </Enveloppe>
 <EnTetePES>
  <DteStr V="{today.isoformat()}"/><IdPost V="035000"/><IdColl V="21350238800017"/><CodCol V="001"/>
  <CodBud V="01"/><LibelleColBud V="COMMUNE DE DÉMO"/>
 </EnTetePES>
 <PES_DepenseAller>
  <EnTeteDepense><IdVer V="1"/><InfoDematerialisee V="1"/></EnTeteDepense>
  <Bordereau Id="BORDDEMO1">
   <BlocBordereau>
    <Exer V="{today.year}"/><IdBord V="1"/><DteBordEm V="{today.isoformat()}"/><TypBord V="01"/><NbrPce V="1"/>
    <MtCumulAnnuel V="1250.00"/><MtBordHT V="1250.00"/>
   </BlocBordereau>
   <Piece>
    <BlocPiece><InfoPce><IdPce V="1"/><TypPce V="01"/><NatPce V="01"/><Obj V="FOURNITURES SCOLAIRES"/></InfoPce></BlocPiece>
    <LigneDePiece>
     <BlocLignePiece><InfoLignePce><IdLigne V="1"/><Nature V="6067"/><Fonction V="212"/><LibVir1 V="FOURNITURES"/>
      <ModRegl V="03"/><TVAIntraCom V="0"/><MtHT V="1250.00"/></InfoLignePce></BlocLignePiece>
     <Tiers><InfoTiers><RefTiers V="1"/><CatTiers V="01"/><NatJur V="01"/><Nom V="PAPETERIE DU CENTRE"/></InfoTiers>
      <Adresse><TypAdr V="1"/><Adr2 V="2 RUE DES ÉCOLES"/><CP V="35000"/><Ville V="DÉMO-SUR-MER"/><CodRes V="0"/></Adresse>
     </Tiers>
    </LigneDePiece>
   </Piece>
  </Bordereau>
 </PES_DepenseAller>
 <PES_PJ><EnTetePES_PJ><IdVer V="1"/></EnTetePES_PJ></PES_PJ>
</n:PES_Aller>
"""
    return xml.encode("iso-8859-1")


@dataclass(frozen=True)
class DemoDocument:
    flow: str
    fields: dict[str, Any]
    files: dict[str, tuple[str, str, bytes]]  # field → (filename, media type, bytes)


def demo_documents(today: date, run_tag: str) -> list[DemoDocument]:
    """One document per shipped flow (``run_tag`` keeps the PES NomFic unique per database)."""
    pdf = "application/pdf"
    deliberation = multipage_pdf([
        [f"{DEMO_NAME} - Conseil municipal", "", "Délibération n° DEMO_DEL_001",
         "Objet : adhésion au service commun d'archivage électronique", "",
         "Le conseil municipal, régulièrement convoqué, s'est réuni en séance publique.",
         "Vu le code général des collectivités territoriales ;"],
        ["Après en avoir délibéré, le conseil municipal, à l'unanimité :", "",
         "- approuve l'adhésion de la commune au service commun d'archivage électronique ;",
         "- autorise le maire à signer la convention correspondante."],
        ["Fait et délibéré les jour, mois et an susdits.", "", "Le maire,", "Jeanne Martin"],
    ], title="Délibération DEMO_DEL_001")
    contrat = multipage_pdf([
        ["Contrat de travail à durée déterminée", "", "Entre la Commune de Démo et M. Louis Durand,",
         "adjoint administratif territorial."],
        ["Article 1 - Durée : six mois à compter de la prise de fonctions.", "Article 2 - Rémunération : IB 367."],
    ], title="Contrat de Louis Durand")
    bulletin = multipage_pdf([["Bulletin de paie - octobre 2026", "", "Agent : Camille Leroy (matricule A-1042)",
                               "Net à payer : 1 854,32 EUR"]], title="Bulletin de paie 2026-10")
    concession = multipage_pdf([
        ["Arrêté de concession funéraire n° C-2026-017", "", "Le maire de la Commune de Démo,",
         "Accorde à Mme Hélène Bernard une concession trentenaire au cimetière du Centre."],
        ["Emplacement : carré B, rang 4, tombe 12.", "", "Le maire,", "Jeanne Martin"],
    ], title="Concession C-2026-017")
    d = today.isoformat()
    return [
        DemoDocument("demo", {"title": "Document de démonstration"},
                     {"file": ("demo.txt", "text/plain",
                               "Bonjour, ceci est le fichier du document de démonstration.\n".encode())}),
        DemoDocument("deliberation", {"objet": "Adhésion au service commun d'archivage électronique",
                                      "nature": "1", "numero_acte": "DEMO_DEL_001", "date_decision": d,
                                      "classification": "7.1"},
                     {"arrete": ("deliberation-DEMO_DEL_001.pdf", pdf, deliberation)}),
        DemoDocument("pes", {"objet": f"Mandats de dépenses du {d}"},
                     {"pes_aller": (f"PES_DEMO_{run_tag}.xml", "application/xml",
                                    pes_aller(f"PES_DEMO_{run_tag}.xml", today))}),
        DemoDocument("rh-contrat", {"agent_nom": "Durand", "agent_prenom": "Louis",
                                    "agent_email": "louis.durand@agents.demo.test", "matricule": "A-2001",
                                    "type_contrat": "cdd", "date_debut": d},
                     {"contrat": ("contrat-durand.pdf", pdf, contrat)}),
        DemoDocument("rh-paie", {"agent_nom": "Leroy", "agent_email": "camille.leroy@agents.demo.test",
                                 "matricule": "A-1042", "periode": "2026-10"},
                     {"bulletin": ("bulletin-2026-10-leroy.pdf", pdf, bulletin)}),
        DemoDocument("cimetiere", {"objet": "Concession trentenaire, carré B rang 4 tombe 12", "cimetiere": "Centre",
                                   "numero_concession": "C-2026-017", "concessionnaire_nom": "Hélène Bernard",
                                   "defunt_nom": "Marcel Bernard", "duree": "30", "date_decision": d,
                                   "famille_email": "helene.bernard@famille.demo.test"},
                     {"arrete": ("concession-C-2026-017.pdf", pdf, concession)}),
    ]


@dataclass
class DemoSeed:
    entity_id: str
    created: list[Document]  # documents created by this seeding
    documents: dict[str, Document]  # flow → the demo document of that flow
    instances: list[str]
    password: str = ""  # the demo administrator's password of this run


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def ensure_entity(rt: Any) -> tuple[Any, bool]:
    from flowbus.api.entities import create_entity
    from flowbus.store import repo
    async with rt.store.transaction() as tx:
        entity = await repo.entity_by_siren(tx, DEMO_SIREN)
    if entity is not None:
        return entity, False
    return await create_entity(rt, name=DEMO_NAME, siren=DEMO_SIREN, parent=None, actor_name=ACTOR), True


async def configure_instances(rt: Any, entity_id: str, sims: DemoSimulators) -> list[str]:
    """Create or replace the demo entity's API-managed instances (ports change at each start)."""
    saved = []
    async with rt.store.transaction() as tx:
        for spec in instance_specs(sims, rt.settings.base_url):
            inst = await rt.instances.save(tx, {**spec, "entity": entity_id}, at=rt.clock.now())
            saved.append(inst.id)
    return saved


async def seed(rt: Any, sims: DemoSimulators, *, out: Callable[[str], None] = print) -> DemoSeed:
    """Entity, instances and one started document per shipped flow; nothing is created twice."""
    from flowbus import documents
    from flowbus.store import repo

    accelerate(rt, timedelta(seconds=sims.timing.check_every))
    entity, new_entity = await ensure_entity(rt)
    if new_entity:
        out(f"Entité de démonstration : {entity.name} ({entity.id})")
    instances = await configure_instances(rt, entity.id, sims)
    demo_password = await demo_administrator(rt)
    created: list[Document] = []
    docs: dict[str, Document] = {}
    run_tag = entity.id.replace("-", "")[:12].upper()
    for spec in demo_documents(rt.clock.now().date(), run_tag):
        if spec.flow not in rt.flows:
            continue
        async with rt.store.transaction() as tx:
            found = await repo.search_documents(tx, entity_ids=[entity.id], flow=spec.flow, state=None, since=None,
                                                until=None, q=None, limit=1, after=None)
        doc = found[0] if found else None
        if doc is None:
            doc = await documents.create_document(rt, entity_id=entity.id, flow_id=spec.flow, fields=spec.fields,
                                                  actor=ACTOR)
            created.append(doc)
        if doc.state == "draft":  # new, or left half-seeded by an interrupted run
            for field_name, (filename, media_type, content) in spec.files.items():
                await documents.attach_file(rt, doc.id, field_name, filename=filename, media_type=media_type,
                                            chunks=_bytes(content), actor=ACTOR)
            doc = await documents.run_action(rt, doc.id, "start", actor=ACTOR)
        docs[spec.flow] = doc
    log.info("demo.seeded", entity=entity.id, created=len(created), instances=instances)
    return DemoSeed(entity.id, created, docs, instances, demo_password)


DEMO_LOGIN = "demo.admin"


async def demo_administrator(rt: Any) -> str:
    """The demo's platform administrator, with a fresh random password each run (printed by ``guide``)."""
    import secrets

    from flowbus.people import accounts
    from flowbus.people.access import EVERY_ENTITY, Grant
    password = "demo-" + secrets.token_urlsafe(9)
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await accounts.by_login(tx, DEMO_LOGIN)
        if user is None:
            user = await accounts.create(tx, login=DEMO_LOGIN, name="Administrateur de démonstration",
                                         email="demo.admin@demo.invalid", actor=ACTOR, now=now,
                                         must_change_password=False)
            await accounts.grant(tx, user, Grant(EVERY_ENTITY, "admin"), actor=ACTOR, now=now)
        await accounts.set_password(tx, user, password, actor=ACTOR, now=now)
        if not user.active:
            await accounts.set_active(tx, user, True, actor=ACTOR, now=now)
    return password


def guide(rt: Any, sims: DemoSimulators, result: DemoSeed) -> list[str]:
    """Where to look, in French."""
    base = rt.settings.base_url.rstrip("/")
    lines = ["", "=== Démonstration flowbus ===",
             f"Entité : {DEMO_NAME} ({result.entity_id}) — {len(result.created)} document(s) créé(s) par ce "
             f"lancement, {len(result.documents)} au total"]
    for flow, doc in result.documents.items():
        lines.append(f"  - {flow:<13} {doc.id}  état : {doc.state}  ({base}/admin/documents/{doc.id})")
    lines += [
        f"Console d'administration : {base}/admin/ — identifiant « {DEMO_LOGIN} », mot de passe "
        f"« {result.password} » (nouveau à chaque lancement)",
        f"Parapheur : cachet serveur horodaté (simulateur d'horodatage {sims.tsa.url}) ; signature de l'agent "
        f"dans le simulateur i-Parapheur {sims.iparapheur.url}/sim/ (approbation automatique après "
        f"{sims.timing.approve_after:g} s)",
        f"Boîte du signataire (parapheur intégré) : {base}/parapheur/ — les circuits de la démo sont automatiques",
        f"Télétransmission : simulateur S²LOW {sims.s2low.url} (accusé de réception après "
        f"{sims.timing.transmit + sims.timing.ar:g} s)",
        f"Courriel sécurisé : serveur SMTP local 127.0.0.1:{sims.smtp.port} ; les liens de la page destinataire "
        "s'affichent ci-dessous dès l'envoi",
        f"GED : {sims.ged_dir}",
        f"Archives : paquets SEDA scellés dans le magasin d'archives intégré, recherche archiviste sur {base}/archives/",
        "Publication : connecteur de test (aucun site de publication simulé)",
        f"API : {base}/api/v1/documents (en-tête « Authorization: Bearer <clé> »)", ""]
    return lines


async def start_demo(rt: Any, *, timing: DemoTiming | None = None,
                     out: Callable[[str], None] = print) -> DemoSimulators:
    """What ``serve --demo`` does: simulators, seeding, the guide, and the mail watcher. Stop with ``sims.stop()``."""
    sims = await start_simulators(rt.settings.data_dir, timing)
    try:
        result = await seed(rt, sims, out=out)
    except BaseException:
        await sims.stop()
        raise
    for line in guide(rt, sims, result):
        out(line)
    sims.watch_mail(out)
    return sims

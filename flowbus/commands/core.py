"""Core commands: serve, init, doctor, journal verify."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from flowbus.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "demo", False):
        overrides["demo"] = True
    settings = Settings(**overrides)
    if settings.demo:
        # the demonstration's simulators listen on loopback: allowed explicitly, through the operator's setting
        from flowbus.outbound import LOOPBACK
        allow = ",".join(part for part in (settings.outbound_allow, LOOPBACK) if part)
        settings = settings.model_copy(update={"outbound_allow": allow})
    return settings


async def _ensure_admin_key(rt: Any) -> str | None:
    """Create the first platform administrator key if there is none; return its secret."""
    from flowbus.api.auth import create_api_key
    async with rt.store.transaction() as tx:
        count = await tx.fetchval("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
    if int(count):
        return None
    _key, secret = await create_api_key(rt, name="administrateur", roles={"*": "admin"})
    return secret


async def cmd_init(args: argparse.Namespace) -> int:
    from flowbus import log as flog
    from flowbus.app import build
    from flowbus.errors import FlowbusError
    settings = _settings(args)
    flog.configure(settings.log_format, settings.log_level)
    try:
        rt = await build(settings)
    except FlowbusError as exc:
        print(f"flowbus init: {exc}", file=sys.stderr)
        return 1
    try:
        secret = await _ensure_admin_key(rt)
        from flowbus.people.bootstrap import FIRST_LOGIN, ensure_first_admin
        link = await ensure_first_admin(rt)
        print(f"Database ready ({rt.store.dialect}).")
        if secret:
            print("First administrator key (shown only once, keep it safe):")
            print(f"API key: {secret}")
        else:
            print("An administrator key already exists; none was created.")
        if link:
            print(f"First platform administrator: login '{FIRST_LOGIN}'. One-time sign-in link (valid 24 h), "
                  "to choose its password:")
            print(link)
        if getattr(args, "demo", False):
            await seed_demo(rt)
    finally:
        await rt.close()
    return 0


async def seed_demo(rt: Any) -> None:
    """A demo entity and a demo document pushed through the demo flow (idempotent)."""
    from flowbus import documents
    from flowbus.api.entities import create_entity
    from flowbus.store import repo

    async with rt.store.transaction() as tx:
        entity = await repo.entity_by_siren(tx, "213502388")
    if entity is None:
        entity = await create_entity(rt, name="Commune de Démo", siren="213502388", parent=None, actor_name="demo")
        print(f"Demo entity: {entity.name} ({entity.id})")
    async with rt.store.transaction() as tx:
        existing = await repo.search_documents(tx, entity_ids=[entity.id], flow="demo", state=None, since=None,
                                               until=None, q=None, limit=1, after=None)
    if existing or "demo" not in rt.flows:
        return
    doc = await documents.create_document(rt, entity_id=entity.id, flow_id="demo",
                                          fields={"title": "Document de démonstration"}, actor="demo")

    async def content() -> Any:
        yield "Bonjour, ceci est le fichier du document de démonstration.\n".encode()

    await documents.attach_file(rt, doc.id, "file", filename="demo.txt", media_type="text/plain", chunks=content(),
                                actor="demo")
    await documents.run_action(rt, doc.id, "start", actor="demo")
    print(f"Demo document: {doc.id} (GET {rt.settings.base_url}/api/v1/documents/{doc.id})")


async def cmd_serve(args: argparse.Namespace) -> int:
    from flowbus import log as flog
    from flowbus.app import build, run_forever
    from flowbus.errors import FlowbusError
    settings = _settings(args)
    flog.configure(settings.log_format, settings.log_level)
    try:
        rt = await build(settings)
    except FlowbusError as exc:
        print(f"flowbus serve: refusing to start: {exc}", file=sys.stderr)
        return 1
    sims = None
    try:
        secret = await _ensure_admin_key(rt)
        if secret:
            print(f"API key: {secret}", flush=True)
        if args.role in ("all", "api"):
            from flowbus.people.bootstrap import FIRST_LOGIN, ensure_first_admin
            link = await ensure_first_admin(rt)
            if link:
                print(f"First platform administrator '{FIRST_LOGIN}': choose its password at {link}", flush=True)
        if args.demo:
            # the simulators of the outside systems, the demo entity's instances and one document per flow
            from flowbus import demo
            sims = await demo.start_demo(rt, out=lambda line: print(line, flush=True))
        print(f"flowbus {args.role} on {settings.base_url} (store {rt.store.dialect}, "
              f"bus {type(rt.bus).__name__}, blobs {type(rt.blobs).__name__})", flush=True)
        task = asyncio.ensure_future(run_forever(rt, args.role))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
    finally:
        await rt.close()
        if sims is not None:
            await sims.stop()
    return 0


async def cmd_doctor(args: argparse.Namespace) -> int:
    """Check everything a real install needs, one line per check, in French, with the fix of each problem."""
    from flowbus.app import make_blobs, make_bus, make_store
    from flowbus.connectors.instances import InstanceRegistry
    from flowbus.errors import FlowbusError
    settings = _settings(args)
    problems = 0

    def report(name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        nonlocal problems
        print(f"[{'ok' if ok else 'KO'}] {name}: {detail}")
        if not ok:
            problems += 1
            if fix:
                print(f"     → {fix}")

    try:
        from flowbus.app import yaml_instances
        instances = InstanceRegistry(yaml_instances(settings))
        report("connecteurs", True, f"{len(instances.ids)} instance(s) dans {settings.connectors_dir}"
               + (f" et {settings.demo_dir} (démonstration)" if settings.demo else ""))
    except FlowbusError as exc:
        instances = InstanceRegistry([])
        report("connecteurs", False, str(exc), "corrigez le fichier nommé ci-dessus")
    try:
        from flowbus import secretbox
        keys = secretbox.read_keys(settings, create=False)
        if keys:
            secretbox.SecretBox(keys)
        where = "FLOWBUS_SECRET_KEYS" if settings.secret_keys.get_secret_value().strip() else \
            str(secretbox.key_file(settings))
        report("secrets", True, f"{len(keys)} clé(s) lue(s) depuis {where}" if keys else
               f"aucune clé encore : {where} sera créé au premier démarrage")
    except (FlowbusError, OSError, ValueError) as exc:
        report("secrets", False, str(exc), "renseignez FLOWBUS_SECRET_KEYS ou restaurez le fichier de clés")
    try:
        from flowbus import schemas
        where = schemas.directory(settings)
        schemas.actes()
        report("schémas", True, f"XSD officiels (SEDA, ACTES, PES) dans {where}")
    except FlowbusError as exc:
        report("schémas", False, exc.message, exc.hint)
    store = make_store(settings)
    try:
        await store.open()
        health = await store.check()
        report("base d'état", health.ok, health.detail, health.fix)
        if health.ok:
            flows = await _doctor_flows(store, settings, instances, report)
            from flowbus.people.health import checks as people_checks
            for name, ok, detail, fix in await people_checks(store, settings):
                report(name, ok, detail, fix)
            from flowbus.connectors.coverage import checks as connector_checks
            for name, ok, detail, fix in await connector_checks(store, settings, flows, instances):
                report(name, ok, detail, fix)
    except FlowbusError as exc:
        report("base d'état", False, exc.message, exc.hint)
    blobs = make_blobs(settings)
    health = await blobs.check()
    report("fichiers", health.ok, health.detail, health.fix)
    bus = make_bus(settings, store)
    try:
        async with asyncio.timeout(15):
            await bus.start()
        health = await bus.check()
        report("bus", health.ok, health.detail, health.fix)
    except Exception as exc:  # noqa: BLE001 - reported in plain words
        report("bus", False, f"{settings.bus_url.split('@')[-1]} : {exc}",
               "démarrez RabbitMQ (`rabbitmq-server -detached`) ou choisissez FLOWBUS_BUS_URL=embedded")
    finally:
        await bus.close()
        await blobs.close()
        await store.close()
    print("Tout est prêt." if not problems else f"{problems} problème(s) trouvé(s).")
    return 0 if not problems else 1


async def _doctor_flows(store: Any, settings: Any, instances: Any, report: Any) -> dict[str, Any]:
    """Each flow file alone (an invalid one is refused alone; its last good version stays in service), then the
    archiving profile of each archive step; returns the flows that would be in service."""
    from flowbus.archive import profile_check
    from flowbus.connectors.registry import FAMILIES
    from flowbus.flows import catalog
    async with store.transaction() as tx:
        # as the server loads them; unconfigured instances are the connector lines' business below
        valid, problems = catalog.check_files(settings.flows_dir, families=FAMILIES, instances=None)
        flows = {flow_id: flow for flow_id, (flow, _text) in valid.items()}
        for problem in problems:
            problem = await catalog.identify(tx, problem)
            kept = await catalog.latest(tx, problem.flow_id) if problem.flow_id else None
            if kept is not None and problem.flow_id not in flows:
                flows[problem.flow_id] = kept
            detail = f"{problem.file} refusé, {len(problem.errors)} erreur(s)" + (
                f" ; la version {kept.version} reste en service" if kept else " ; ce flux n'est pas disponible")
            first = problem.errors[0] if problem.errors else None
            fix = (f"{first.position}: {first.message}" if first and first.position else (first.message if first
                   else "")) + " — détail : `flowbus flows validate " + problem.file + "`"
            report(f"flux {problem.flow_id or problem.file}", False, detail, fix)
    if valid:
        report("flux", True, f"{len(valid)} flux valide(s) dans {settings.flows_dir}")
    elif not problems:
        report("flux", False, f"aucun fichier de flux dans {settings.flows_dir}",
               "ajoutez un fichier .yml par flux (exemples : config/flows du dépôt)")
    configured = {k for inst in instances.declared_of_family("sae") for k, v in inst.settings.items() if v}
    async with store.transaction() as tx:  # the console's SAE instances too (their settings, secrets sealed)
        for row in await tx.fetch("SELECT settings FROM connector_instances WHERE family = 'sae'"):
            configured |= {k for k, v in json.loads(row["settings"]).items() if v}
    for flow in sorted(flows.values(), key=lambda f: f.id):
        for step_id, ok, detail in profile_check.check(flow, settings.config_dir, configured):
            report(f"profil d'archivage {flow.id}/{step_id}", ok, detail,
                   None if ok else "renseignez les identifiants du service d'archives dans le connecteur SAE de chaque "
                                   f"collectivité (« Connecteurs ») ou dans config/archive/ ; params.profile de l'étape "
                                   f"{step_id} choisit le profil")
    return flows


async def cmd_journal_verify(args: argparse.Namespace) -> int:
    from flowbus.app import make_store
    from flowbus.journal_verify import verify_store
    settings = _settings(args)
    store = make_store(settings)
    await store.open()

    def progress(done: int, expected: int, entities_done: int, entities: int) -> None:
        share = f" ({100 * done // expected} %)" if expected else ""
        print(f"… {done}/{expected} entries{share}, {entities_done}/{entities} entities", file=sys.stderr, flush=True)

    try:
        report = await verify_store(store, entity_id=args.entity, since=args.since, jobs=args.jobs,
                                    progress=None if args.quiet else progress)
    finally:
        await store.close()
    for b in report.breaks:
        print(f"BROKEN: {b}")
    if report.breaks:
        print(f"{len(report.breaks)} problem(s) in the journal.")
        return 1
    print(f"Journal intact: {report.verified} entries verified.")
    if report.checkpointed:
        print(f"{report.skipped} earlier entries of {report.checkpointed} entities skipped: verified up to their "
              "checkpoint before (--since).")
    rate = report.verified / report.seconds if report.seconds > 0 else 0
    print(f"{report.entities} entities in {report.seconds:.1f} s ({rate:,.0f} entries/s).", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the API and the workers")
    p.add_argument("--role", choices=["all", "api", "worker"], default="all")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--demo", action="store_true",
                   help="start the simulators (S²LOW, i-Parapheur, SMTP, TSA) and run one document per shipped flow")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("init", help="create or migrate the database and the first administrator key")
    p.add_argument("--demo", action="store_true", help="also seed a demo entity and document")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("doctor", help="check every configured backend")
    p.set_defaults(func=cmd_doctor)

    j = sub.add_parser("journal", help="journal tools").add_subparsers(dest="journal_command", metavar="ACTION")
    p = j.add_parser("verify", help="verify the hash chains of the journal")
    p.add_argument("--entity", help="only this entity's chain")
    p.add_argument("--since", action="store_true",
                   help="start each chain after its last checkpoint (written by every verification that found it "
                        "intact) instead of its first entry")
    p.add_argument("--jobs", type=int, help="entities verified at a time (default: 4 on PostgreSQL, 2 on SQLite)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_journal_verify)

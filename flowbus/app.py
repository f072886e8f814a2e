"""Composition root: ``build(settings) -> Runtime``, the only place that creates the backends.

Roles: ``api`` (HTTP only), ``worker`` (engine consumers only), ``all`` (both, default).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from flowbus.blobs.base import BlobStore, Health
from flowbus.clock import Clock, SystemClock
from flowbus.connectors.instances import InstanceRegistry, load_yaml_instances
from flowbus.connectors.registry import FAMILIES, check_allowed, connector_class
from flowbus.errors import InvalidFlows
from flowbus.outbound import STRICT, OutboundPolicy, client_session
from flowbus.settings import Settings
from flowbus.store.base import Store, Tx

log = structlog.get_logger(__name__)

StateHook = Callable[[Tx, Any, str, str], Awaitable[None]]
# (tx, document, step, outcome) when a step ends done, in the engine's transaction; the hook's owner lists
# the connector families it cares about in ``step_families`` (the short record leaves those steps alone)
StepHook = Callable[[Tx, Any, Any, Any], Awaitable[None]]


@dataclass
class Runtime:
    settings: Settings
    store: Store
    blobs: BlobStore
    bus: Any  # flowbus.bus.base.Bus
    clock: Clock
    flows: dict[str, Any]  # flow id → flowbus.flows.model.Flow, the versions in service
    instances: InstanceRegistry
    log: Any = field(default_factory=lambda: structlog.get_logger("flowbus"))
    http: aiohttp.ClientSession | None = None
    secrets: Any = None  # flowbus.secretbox.SecretBox: secrets at rest
    outbound: OutboundPolicy = STRICT  # where connectors, webhooks, TSA and sign-in providers may connect
    state_hooks: list[StateHook] = field(default_factory=list)
    step_hooks: list[StepHook] = field(default_factory=list)
    engine: Any = None  # flowbus.flows.runner.Engine
    flow_history: dict[tuple[str, int], Any] = field(default_factory=dict)  # (flow id, version) met by this process
    flow_problems: list[Any] = field(default_factory=list)  # flowbus.flows.catalog.FlowProblem of the last load
    flows_generation: int = 0  # the last flow reload this process applied
    _connectors: dict[tuple, Any] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def flow(self, flow_id: str) -> Any:
        try:
            return self.flows[flow_id]
        except KeyError:
            from flowbus.errors import NotFound
            raise NotFound(f"flow {flow_id!r} does not exist", field="flow",
                           hint=f"known flows: {', '.join(sorted(self.flows))}") from None

    def flow_of(self, doc: Any) -> Any:
        """The flow version a document runs on: the one it was started with; a draft, the version in service."""
        version = getattr(doc, "flow_version", None)
        if version is not None and doc.state != "draft":
            current = self.flows.get(doc.flow_id)
            if current is None or current.version != version:
                kept = self.flow_history.get((doc.flow_id, version))
                if kept is not None:
                    return kept
        return self.flow(doc.flow_id)

    async def ensure_flow_of(self, doc: Any, tx: Tx | None = None) -> None:
        """Make ``flow_of(doc)`` find the document's version (recorded by another process, or before a restart);
        ``tx``: the caller's open transaction, read in (never open a second one inside it)."""
        version = getattr(doc, "flow_version", None)
        if version is None or (doc.flow_id, version) in self.flow_history:
            return
        current = self.flows.get(doc.flow_id)
        if current is not None and current.version == version:
            return
        from flowbus.flows import catalog
        if tx is not None:
            flow = await catalog.stored(tx, doc.flow_id, version)
        else:
            async with self.store.transaction() as own:
                flow = await catalog.stored(own, doc.flow_id, version)
        if flow is not None:
            self.flow_history[(doc.flow_id, version)] = flow

    async def reload_flows(self, *, actor: str, announce: bool = True) -> Any:
        """Read config/flows again; the valid files replace their flows, an invalid one is refused alone.

        With ``announce``, the reload is numbered so every other process reloads too. Returns the
        ``flowbus.flows.catalog.Loaded``."""
        from flowbus.flows import catalog
        async with self.store.transaction() as tx:
            # a connector instance not configured yet does not refuse the flow: its step puts the document in a
            # visible « connecteur non configuré » error, and doctor lists what each collectivité lacks
            loaded = await catalog.load(tx, self.settings.flows_dir, families=FAMILIES, instances=None,
                                        at=self.clock.now())
            if announce:
                summary = "; ".join([f"{f} v{v} (nouvelle version)" for f, v in loaded.new_versions]
                                    + [p.summary() for p in loaded.problems]) or "aucun changement"
                generation = await catalog.announce(tx, actor=actor, summary=summary, at=self.clock.now())
            else:
                generation = await catalog.generation(tx)
        for flow in self.flows.values():  # documents started on them finish on them
            self.flow_history[(flow.id, flow.version)] = flow
        self.flows = loaded.flows
        self.flow_problems = loaded.problems
        self.flows_generation = max(self.flows_generation, generation)
        log.info("flows.reloaded", actor=actor, flows=len(loaded.flows), new=loaded.new_versions,
                 refused=[p.file for p in loaded.problems], generation=generation)
        return loaded

    def connector(self, instance: Any) -> Any:
        """One connector object per configured instance (keyed by its settings)."""
        key = (instance.id, instance.entity_id, instance.family, instance.kind,
               repr(sorted(instance.settings.items())))
        conn = self._connectors.get(key)
        if conn is None:
            check_allowed(instance, demo=self.settings.demo)
            cls = connector_class(instance.family, instance.kind)
            conn = cls(instance, self)
            self._connectors[key] = conn
        return conn

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def checks(self) -> dict[str, Health]:
        return {"store": await self.store.check(), "blobs": await self.blobs.check(), "bus": await self.bus.check()}

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.exception("close.failed")
        for conn in self._connectors.values():
            closer = getattr(conn, "close", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:  # noqa: BLE001
                    log.exception("connector.close_failed")
        if self.http is not None:
            await self.http.close()
        await self.bus.close()
        await self.blobs.close()
        await self.store.close()


def make_store(settings: Settings) -> Store:
    if settings.uses_postgres:
        from flowbus.store.postgres import PostgresStore
        return PostgresStore(settings.database_url)
    from flowbus.store.sqlite import SQLiteStore
    path = Path(settings.database_url[len("sqlite:///"):]) if settings.database_url.startswith("sqlite:///") \
        else settings.sqlite_path
    return SQLiteStore(path)


def make_blobs(settings: Settings) -> BlobStore:
    if settings.blob_backend == "s3":
        from flowbus.blobs.s3 import S3BlobStore
        return S3BlobStore.from_settings(settings.s3_endpoint, settings.s3_access_key,
                                         settings.s3_secret_key.get_secret_value(), settings.s3_bucket,
                                         secure=settings.s3_secure, region=settings.s3_region)
    from flowbus.blobs.filesystem import FilesystemBlobStore
    return FilesystemBlobStore(settings.blob_dir)


def make_bus(settings: Settings, store: Store) -> Any:
    if settings.bus_url.startswith("amqp"):
        from flowbus.bus.rabbitmq import RabbitMQBus
        return RabbitMQBus(settings.bus_url, prefix=settings.bus_prefix)
    from datetime import timedelta

    from flowbus.bus.embedded import EmbeddedBus
    return EmbeddedBus(store, lease=timedelta(seconds=settings.bus_lease_seconds))


def load_flows(settings: Settings, instances: InstanceRegistry) -> dict[str, Any]:
    """Load and validate every flow under config/flows, without the store; raise InvalidFlows listing every error
    (``flowbus doctor`` and the commands that need no store; a running server uses ``Runtime.reload_flows``)."""
    from flowbus.flows.catalog import flow_files
    from flowbus.flows.loader import load_flows as load
    from flowbus.flows.validate import validate_flow

    flows, errors = load(flow_files(settings.flows_dir))
    for flow in flows.values():
        errors.extend(validate_flow(flow, families=FAMILIES, instances=instances.ids or None))
    if errors:
        raise InvalidFlows(errors)
    return flows


def yaml_instances(settings: Settings) -> list[Any]:
    """The connector instances of config/connectors/, and of config/demo/ in demonstration mode only."""
    found = load_yaml_instances(settings.connectors_dir)
    if settings.demo and settings.demo_dir.is_dir():
        declared = {(i.id, i.entity_id) for i in found}
        found += [i for i in load_yaml_instances(settings.demo_dir) if (i.id, i.entity_id) not in declared]
    return found


async def build(settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool = True,
                with_flows: bool = True) -> Runtime:
    """Create and open every backend; the caller starts the engine/API as its role needs.
    ``with_flows`` False: no flow in service yet (the caller calls ``reload_flows``)."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    instances = InstanceRegistry(yaml_instances(settings))
    from flowbus import secretbox
    box = secretbox.for_settings(settings)
    instances.box = box
    policy = OutboundPolicy.from_settings(settings)
    instances.outbound = policy
    store = make_store(settings)
    await store.open()
    if migrate:
        await store.migrate()
    blobs = make_blobs(settings)
    bus = make_bus(settings, store)
    await bus.start()
    runtime = Runtime(settings=settings, store=store, blobs=blobs, bus=bus, clock=clock or SystemClock(),
                      flows={}, instances=instances, secrets=box, outbound=policy)
    try:
        if with_flows:
            await runtime.reload_flows(actor="start", announce=False)
    except BaseException:
        await bus.close()
        await blobs.close()
        await store.close()
        raise
    # every HTTP client of the runtime (i-Parapheur, As@lae, notify, OIDC, CAS, checks) connects through the policy
    runtime.http = client_session(policy, timeout=aiohttp.ClientTimeout(total=120))
    from flowbus.flows.runner import Engine
    runtime.engine = Engine(runtime)
    # every process announces its documents' state changes to the entity's webhooks
    from flowbus.connectors import webhooks
    webhooks.install(runtime)
    from flowbus import notifications  # and to the people who subscribed
    notifications.install(runtime)
    return runtime


def freeze_startup_objects() -> None:
    """Keep what start-up loaded (modules, XSD schemas, flows) out of the garbage collector's full
    passes: they live as long as the process, and walking them made each full pass a 30-70 ms pause
    of every step in flight (measured with bench/bench_engine.py)."""
    gc.collect()
    gc.freeze()


def _reload_on_sighup(runtime: Runtime) -> None:
    """``kill -HUP`` reloads config/flows (and tells the other processes), as the console's button does."""
    import signal

    async def reload() -> None:
        try:
            await runtime.reload_flows(actor="signal SIGHUP")
        except Exception:  # noqa: BLE001 - the flows in service stay; say why
            log.error("flows.reload_failed", exc_info=True)

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
    except (NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP here (another OS, not the main thread)
        log.info("flows.sighup_unavailable")


async def run_forever(runtime: Runtime, role: str) -> None:
    """Run the API and/or the workers until cancelled (SIGINT/SIGTERM)."""
    from aiohttp import web

    from flowbus.api import create_app

    freeze_startup_objects()

    from flowbus.heartbeat import Heartbeat
    Heartbeat(runtime, role).start()
    from flowbus.jobs import platform_jobs
    from flowbus.scheduler import Scheduler
    jobs = [j for j in platform_jobs() if role in ("all", "worker") or not j.shared]  # shared work: worker processes
    Scheduler(runtime, jobs).start()
    _reload_on_sighup(runtime)
    runner = None
    if role in ("all", "worker"):
        await runtime.engine.start_workers()
        # webhook deliveries and inbound batches are bus work too
        from flowbus.connectors.inbound import start_background
        await start_background(runtime)
    if role in ("all", "api"):
        app = create_app(runtime)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, runtime.settings.host, runtime.settings.port)
        await site.start()
        log.info("api.listening", url=runtime.settings.base_url)
    try:
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()

"""Shared fixtures: both backend sets (embedded; PostgreSQL + RabbitMQ + S3), a running HTTP server, API clients.

Real services: PostgreSQL and RabbitMQ of this machine, an S3-protocol server (moto) started
here.  A test that needs one it cannot reach fails in CI (CI=true) with the command that
starts it, and is skipped locally.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
PG_ADMIN_DSN = os.environ.get("FLOWBUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("FLOWBUS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
START = {
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "rabbitmq": "rabbitmq-server -detached && rabbitmqctl await_startup",
}


def service_missing(name: str, error: Exception) -> None:
    message = f"{name} is unreachable ({error}); start it with: {START.get(name, name)}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"the shared/ directory is expected beside the repository at {SHARED}"
    return SHARED


# ---- real services ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Any:
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion on a private loop in another thread (usable from sync fixtures)."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_available() -> None:
    import asyncpg
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    await conn.close()


async def _pg_admin(sql: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _amqp_available() -> None:
    """Connect once; a broker busy with queue deletions may take seconds to answer: allow ~45 s."""
    import aio_pika
    last: Exception | None = None
    for _ in range(3):
        try:
            conn = await aio_pika.connect(AMQP_URL, timeout=15)
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            last = exc
            await asyncio.sleep(1)
            continue
        await conn.close()
        return
    assert last is not None
    raise RuntimeError(f"no AMQP connection after 3 tries: {last!r}") from last


TEST_QUEUE = re.compile(r"^t[0-9a-f]{10}\.")


def _test_queues() -> dict[str, int] | None:
    """Queues named like a test's (``t<10 hex>.…``) → their consumer count; None without rabbitmqctl."""
    if shutil.which("rabbitmqctl") is None:
        return None
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name", "consumers"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    queues = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and TEST_QUEUE.match(parts[0]) and parts[1].isdigit():
            queues[parts[0]] = int(parts[1])
    return queues


@pytest.fixture(scope="session", autouse=True)
def _broker_left_clean() -> Any:
    """Delete, at the end of the run, the test queues this run created and left (worker subprocesses,
    failed teardowns): a broker that keeps thousands of idle quorum queues answers slowly."""
    before = _test_queues()
    yield
    if before is None:
        return
    after = _test_queues() or {}
    left = sorted(name for name, consumers in after.items() if name not in before and consumers == 0)
    if left:
        try:
            from flowbus.bus.rabbitmq import delete_queues
            run_sync(delete_queues(AMQP_URL, left))
        except Exception:  # noqa: BLE001 - cleanup only
            pass


@pytest.fixture
def pg_database() -> Any:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    try:
        run_sync(_pg_available())
    except Exception as exc:  # noqa: BLE001
        service_missing("postgresql", exc)
    name = f"flowbus_t_{uuid.uuid4().hex[:12]}"
    run_sync(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def amqp_url() -> str:
    try:
        run_sync(_amqp_available())
    except Exception as exc:  # noqa: BLE001
        service_missing("rabbitmq", exc)
    return AMQP_URL


# ---- settings and runtimes for both backend sets ---------------------------------------------


@pytest.fixture(params=["embedded", "scaleout"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "scaleout":
        request.applymarker(pytest.mark.scaleout)
    return request.param


@pytest.fixture
async def settings_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``settings_factory(backend, **overrides)`` → Settings on tmp dirs; scale-out wires PG + RabbitMQ + S3."""
    from flowbus.settings import Settings

    async def make(kind: str = "embedded", **overrides: Any) -> Settings:
        # demo: the tests run the test connectors of config/demo/ (a real install refuses them);
        # the outbound policy stays on, with loopback (where every simulator listens) allowed as an operator would
        from flowbus.outbound import LOOPBACK
        values: dict[str, Any] = {"data_dir": tmp_path / "var", "config_dir": ROOT / "config",
                                  "log_format": "console", "port": free_port(), "demo": True,
                                  "outbound_allow": LOOPBACK}
        if kind == "scaleout":
            dsn = request.getfixturevalue("pg_database")
            amqp = request.getfixturevalue("amqp_url")
            s3 = request.getfixturevalue("s3_server")
            values.update(database_url=dsn, bus_url=amqp, bus_prefix=f"t{uuid.uuid4().hex[:10]}",
                          blob_backend="s3", s3_endpoint=s3, s3_access_key="test", s3_secret_key="test",
                          s3_bucket=f"flowbus-{uuid.uuid4().hex[:10]}")
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
async def runtime_factory(settings_factory: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """``await runtime_factory(backend, workers=True, **settings)`` → a built Runtime, closed at teardown."""
    from flowbus.app import build
    made: list[Any] = []

    async def make(kind: str = "embedded", *, workers: bool = True, clock: Any = None, **overrides: Any) -> Any:
        settings = await settings_factory(kind, **overrides)
        rt = await build(settings, clock=clock)
        made.append(rt)
        if workers:
            await rt.engine.start_workers()
        return rt

    yield make
    for rt in reversed(made):
        await rt.close()
        purge = getattr(rt.bus, "delete_queues", None)
        if purge is not None:
            try:
                await purge()
            except Exception:  # noqa: BLE001 - cleanup only
                pass


@pytest.fixture
async def runtime(backend: str, runtime_factory: Callable[..., Any]) -> Any:
    return await runtime_factory(backend)


class Server:
    """A flowbus HTTP server on a free loopback port, with an admin API key."""

    def __init__(self, rt: Any, runner: web.AppRunner, url: str, admin_key: str) -> None:
        self.rt, self.runner, self.url, self.admin_key = rt, runner, url, admin_key

    def client(self, key: str | None = None) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return aiohttp.ClientSession(base_url=self.url, headers=headers)


async def start_server(rt: Any) -> Server:
    from flowbus.api import create_app
    from flowbus.api.auth import create_api_key
    app = create_app(rt)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", rt.settings.port)
    await site.start()
    _key, secret = await create_api_key(rt, name="test-admin", roles={"*": "admin"})
    return Server(rt, runner, f"http://127.0.0.1:{rt.settings.port}", secret)


@pytest.fixture
async def server(runtime: Any) -> AsyncIterator[Server]:
    srv = await start_server(runtime)
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def server_factory() -> AsyncIterator[Callable[[Any], Any]]:
    started: list[Server] = []

    async def make(rt: Any) -> Server:
        srv = await start_server(rt)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        await srv.runner.cleanup()


async def wait_for_state(rt: Any, document_id: str, states: str | tuple[str, ...], timeout: float = 30.0) -> Any:
    """Poll the store until the document reaches one of ``states``; fail with its last state."""
    from flowbus import documents
    wanted = (states,) if isinstance(states, str) else states
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    doc = None
    polls = 0
    while loop.time() < deadline:
        doc = await documents.get_document(rt, document_id)
        if doc.state in wanted:
            return doc
        polls += 1
        if polls % 40 == 0 and getattr(rt, "engine", None) is not None and getattr(rt.engine, "_consumer", None):
            # what the server's « engine.overdue » job does every minute: a check the broker kept past its delay
            # (RabbitMQ quorum queues under load, rabbitmq-server#10718) is sent again
            from datetime import timedelta
            await rt.engine.resend_overdue(grace=timedelta(seconds=5))
        await asyncio.sleep(0.05)
    raise AssertionError(f"document {document_id} did not reach {wanted} in {timeout}s: state={doc and doc.state}, "
                         f"step={doc and doc.step}, last_error={doc and doc.last_error}")


@pytest.fixture
def wait_state() -> Callable[..., Any]:
    return wait_for_state


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.async_api import async_playwright
    exe = "/usr/bin/chromium"
    if not Path(exe).exists():
        message = "Chromium is not installed; install it with: apt-get install -y chromium chromium-driver"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


# ---- purpose-made flows and test connector instances (engine, admin console) ----------------

CONNECTORS = """
instances:
  - {id: ok, family: notify, kind: test, entity: null, settings: {}}
  - {id: ok-sig, family: signature, kind: test, entity: null, settings: {}}
  - {id: flaky, family: notify, kind: test-fail, entity: null, settings: {fail_times: 2}}
  - {id: broken, family: notify, kind: test-fail, entity: null, settings: {fail_times: 1000}}
  - {id: refuse, family: signature, kind: test-reject, entity: null, settings: {}}
  - {id: slow-answer, family: tdt-actes, kind: test-wait, entity: null, settings: {checks: 2}}
"""

FLOWS = {
    "four.yml": """
        id: four
        label: "Quatre étapes"
        description: "Quatre étapes instantanées"
        columns: [skip_third]
        fields:
          - {name: title, type: text, label: "Titre", required: true}
          - {name: skip_third, type: boolean, label: "Sauter la 3e", default: false}
        steps:
          - {id: one, label: "Un", family: notify, connector: ok}
          - {id: two, label: "Deux", family: notify, connector: ok}
          - {id: three, label: "Trois", family: notify, connector: ok, when: "not fields.skip_third"}
          - {id: four, label: "Quatre", family: notify, connector: ok}
    """,
    "retry.yml": """
        id: retry
        label: "Nouvelles tentatives"
        description: "Une étape qui échoue deux fois"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
          - id: flaky
            label: "Instable"
            family: notify
            connector: flaky
            retry: {attempts: 3, backoff: 1s, max_backoff: 1s}
    """,
    "broken.yml": """
        id: broken
        label: "En panne"
        description: "Une étape qui échoue toujours"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
          - id: down
            label: "Service en panne"
            family: notify
            connector: broken
            retry: {attempts: 2, backoff: 1s, max_backoff: 1s}
          - {id: after, label: "Après", family: notify, connector: ok}
    """,
    "refusal.yml": """
        id: refusal
        label: "Refus"
        description: "Une signature refusée"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
          - id: sign
            label: "Signature"
            family: signature
            connector: refuse
            on: {rejected: {state: refuse}}
          - {id: never, label: "Jamais", family: notify, connector: ok}
        states:
          refuse: {label: "Refusé", terminal: true}
    """,
    "waiting.yml": """
        id: waiting
        label: "Attente"
        description: "Attend une réponse extérieure"
        fields:
          - {name: title, type: text, label: "Titre"}
        steps:
          - id: tdt
            label: "Télétransmission"
            family: tdt-actes
            connector: slow-answer
            wait: {check_every: 1s, deadline: 1h}
          - {id: last, label: "Fin", family: notify, connector: ok}
    """,
}


@pytest.fixture
def engine_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config"
    (cfg / "flows").mkdir(parents=True)
    (cfg / "connectors").mkdir()
    (cfg / "connectors" / "test.yml").write_text(CONNECTORS)
    for name, text in FLOWS.items():
        (cfg / "flows" / name).write_text(textwrap.dedent(text))
    shutil.copy(ROOT / "config" / "flows" / "demo.yml", cfg / "flows" / "demo.yml")
    (cfg / "connectors" / "demo.yml").write_text(
        "instances:\n  - {id: demo-notify, family: notify, kind: test, entity: null, settings: {}}\n")
    return cfg


# ---- people and pages (console tests) -----------------------------------------------------------

DEFAULT_PASSWORD = "correct-cheval-agrafe-9"


async def make_user(rt: Any, login: str, *, password: str | None = DEFAULT_PASSWORD, name: str | None = None,
                    email: str | None = None, grants: tuple = (), must_change: bool = False) -> Any:
    """An active account with ``grants`` (flowbus.people.access.Grant), signed in with ``password``."""
    from flowbus.people import accounts
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        user = await accounts.create(tx, login=login, name=name or login.title(), email=email or f"{login}@example.fr",
                                     actor="test", now=now, password=password, must_change_password=must_change)
        for g in grants:
            await accounts.grant(tx, user, g, actor="test", now=now)
    return user


@pytest.fixture
def people() -> Any:
    """``people.user(rt, login, grants=…)``, ``people.admin(rt)``, ``await people.sign_in(page, url, login)``."""
    from flowbus.people.access import EVERY_ENTITY, Grant

    class People:
        password = DEFAULT_PASSWORD

        async def user(self, rt: Any, login: str, **kw: Any) -> Any:
            return await make_user(rt, login, **kw)

        async def admin(self, rt: Any, login: str = "plateforme") -> Any:
            return await make_user(rt, login, name="Camille Admin", grants=(Grant(EVERY_ENTITY, "admin"),))

        async def sign_in(self, page: Any, url: str, login: str, password: str = DEFAULT_PASSWORD,
                          then: str = "/admin/") -> None:
            await page.goto(f"{url}/connexion")
            await page.fill("#login", login)
            await page.fill("#password", password)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{url}{then}*")

    return People()


@pytest.fixture
def smtp_server() -> Any:
    """A real SMTP server on loopback that records what it receives (``.received``, ``.to(address)``)."""
    from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
    with SmtpSimulator() as sim:
        yield sim


SCREENSHOT_WIDTHS = {"large": (1366, 768), "mobile": (390, 844)}


@pytest.fixture
def screenshots(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``await screenshots(page, "name")``: the page at 1366×768 and 390 px wide, full height, with no
    sideways scrolling at either width; PNGs in the test's tmp dir (and in $FLOWBUS_SCREENSHOT_DIR)."""
    out_dirs = [tmp_path / "screenshots"]
    if os.environ.get("FLOWBUS_SCREENSHOT_DIR"):
        out_dirs.append(Path(os.environ["FLOWBUS_SCREENSHOT_DIR"]))

    async def take(page: Any, name: str) -> list[Path]:
        taken = []
        original = page.viewport_size
        for label, (width, height) in SCREENSHOT_WIDTHS.items():
            await page.set_viewport_size({"width": width, "height": height})
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {width}px wide"
            for d in out_dirs:
                d.mkdir(parents=True, exist_ok=True)
                path = d / f"{name}-{label}.png"
                await page.screenshot(path=str(path), full_page=True)
                taken.append(path)
        if original:
            await page.set_viewport_size(original)
        return taken

    return take

"""A local SMTP server (aiosmtpd) that records what it receives and refuses the addresses it is told to.

Used by the tests and ``bench/bench_mailsec.py``; it speaks real SMTP on a free loopback port,
so the production client (``send.SmtpPool``) is what gets tested.  aiosmtpd is a test
dependency: import this module only where it is installed.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]

    def text(self) -> str:
        msg = self.message()
        part = msg.get_body(("plain",))
        return part.get_content() if part is not None else ""

    def html(self) -> str | None:
        part = self.message().get_body(("html",))
        return part.get_content() if part is not None else None


class _Handler:
    def __init__(self, sim: SmtpSimulator) -> None:
        self.sim = sim

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        answer = self.sim.refuse.get(address.lower())
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        with self.sim._lock:
            self.sim.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(data)))
        return "250 Message accepted for delivery"


class SmtpSimulator:
    """``with SmtpSimulator(refuse={"x@y.fr": "550 5.1.1 Unknown user"}) as sim: sim.port …``

    ``credentials=(user, password)`` requires AUTH; ``tls_context`` offers STARTTLS.
    """

    def __init__(self, *, refuse: dict[str, str] | None = None, credentials: tuple[str, str] | None = None,
                 tls_context: ssl.SSLContext | None = None, require_starttls: bool = False) -> None:
        self.refuse = {k.lower(): v for k, v in (refuse or {}).items()}
        self.credentials = credentials
        self.received: list[Received] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": 0, "ready_timeout": 10,
                                  "data_size_limit": 64 * 1024 * 1024}
        if credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=tls_context is not None,
                          auth_required=True)
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        self._controller = _FreePortController(_Handler(self), **kwargs)

    def _authenticate(self, server: Any, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.credentials is not None:
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if (user, password) == self.credentials:
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    @property
    def port(self) -> int:
        return self._controller.port

    def start(self) -> SmtpSimulator:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if address in r.rcpt_tos]


class _FreePortController(Controller):
    """aiosmtpd's Controller, bound to port 0: learn the real port before the readiness probe."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def main() -> None:
    """``python -m flowbus.connectors.mailsec.smtp_sim``: a separate SMTP server process for benchmarks.

    Prints ``PORT <n>``; then answers each ``stats`` line on stdin with one JSON line
    (messages received, messages holding a ``/mail/<token>`` link, distinct links); exits on EOF.
    """
    import json
    import re
    import sys

    link = re.compile(rb"/mail/([A-Za-z0-9_-]{43})")
    with SmtpSimulator() as sim:
        print(f"PORT {sim.port}", flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                with sim._lock:
                    received = list(sim.received)
                found = [m.group(1) for r in received if (m := link.search(r.data))]
                print(json.dumps({"messages": len(received), "links": len(found), "distinct": len(set(found))}),
                      flush=True)


if __name__ == "__main__":
    main()

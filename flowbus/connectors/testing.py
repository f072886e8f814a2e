"""Test connectors: instant, fail-n-times, reject, wait-then-done; every effect counted per key.

They are real connectors (selected by ``kind`` in a connector instance, like Pastell's
fakeIparapheur), registered for every family as kinds ``test``, ``test-fail``,
``test-reject`` and ``test-wait``.  Settings (all optional)::

    fields: {numero: "X"}     # fields the outcome sets (every kind)
    files:  [{field: arrete_signe, filename: s.pdf, media_type: application/pdf, content: "…"}]
    fail_times: 2             # test-fail: TransientError for the first N calls per document step
                              #   (counted in the effect log when log_path is set: shared by processes)
    retry_in: 0.05            # test-fail: seconds the engine should wait before the next try
    reason: "Refus du signataire"   # test-reject
    outcome: refused          # test-reject / test: the outcome name (default rejected / done)
    checks: 3                 # test-wait: done at the 3rd check
    check_in: 0.05            # test-wait: seconds between checks (default: the step's wait.check_every)
    log_path: /tmp/effects.log  # append one line per effect, flushed and fsync'd
    delay: 0.5                # seconds the call lasts after its effect (crash tests kill a worker meanwhile)

With ``log_path``, ``InstantConnector`` behaves like a remote system that deduplicates by
idempotency key: a second call with a key already in the log (a redelivery after a crash)
writes a ``replay`` line instead of a new effect, as a real connector asks the remote
system whether it already has the key.

Calls are counted in the runtime's ``CallCounter`` (``calls_for(runtime)``), so tests of one
runtime do not see another's.  A crash test whose worker runs in another process reads the
``log_path`` file instead (``read_effect_log``): each line is written and fsync'd before the
connector returns, so a line exists for every effect that happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flowbus.connectors.base import BaseConnector, ConnectorInstance, NewFile, Outcome, StepContext
from flowbus.errors import TransientError


class CallCounter:
    """Counts connector calls by idempotency key (``document:step:attempt``).

    ``count(key)`` accepts a full key or a prefix ending at a ``:`` boundary, so
    ``count(f"{doc}:{step}")`` counts every attempt of one step.
    """

    def __init__(self) -> None:
        self._calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, *, kind: str, instance: str, op: str, key: str, step: str) -> None:
        with self._lock:
            self._calls.append({"kind": kind, "instance": instance, "op": op, "key": key, "step": step})

    def _match(self, call: Mapping[str, Any], key: str | None, op: str | None, kind: str | None,
               instance: str | None) -> bool:
        if key is not None and not (call["key"] == key or call["key"].startswith(key + ":")):
            return False
        return all(v is None or call[k] == v for k, v in (("op", op), ("kind", kind), ("instance", instance)))

    def count(self, key: str | None = None, *, op: str | None = "start", kind: str | None = None,
              instance: str | None = None) -> int:
        """Calls for ``key`` (``op="start"`` by default: the effects; ``op=None``: starts and checks)."""
        with self._lock:
            return sum(1 for c in self._calls if self._match(c, key, op, kind, instance))

    def total(self, *, op: str | None = "start") -> int:
        return self.count(None, op=op)

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._calls)

    def by_key(self, *, op: str | None = "start") -> Counter[str]:
        with self._lock:
            return Counter(c["key"] for c in self._calls if op is None or c["op"] == op)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


def calls_for(runtime: Any) -> CallCounter:
    """The runtime's CallCounter, created on first use."""
    counter = getattr(runtime, "test_calls", None)
    if counter is None:
        counter = CallCounter()
        runtime.test_calls = counter
    return counter


def read_effect_log(path: Path | str) -> list[dict[str, Any]]:
    """The lines an effect log holds (one JSON object per effect)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def count_in_log(path: Path | str, key: str | None = None, *, op: str | None = "start") -> int:
    return sum(1 for e in read_effect_log(path)
               if (key is None or e["key"] == key or e["key"].startswith(key + ":")) and (op is None or e["op"] == op))


def _step_key(ctx: StepContext) -> str:
    """The idempotency key without its attempt number: the engine bumps the attempt after each failure."""
    return f"{ctx.document.id}:{ctx.step_id}"


class _TestConnector(BaseConnector):
    kind = "test"

    def __init__(self, instance: ConnectorInstance, runtime: Any) -> None:
        super().__init__(instance, runtime)
        self.counter = calls_for(runtime)
        self._log_lock = threading.Lock()

    def _record(self, ctx: StepContext, op: str) -> None:
        self.counter.record(kind=self.kind, instance=self.instance.id, op=op, key=ctx.idempotency_key,
                            step=ctx.step_id)
        log_path = self.instance.settings.get("log_path")
        if log_path:
            line = json.dumps({"kind": self.kind, "instance": self.instance.id, "op": op,
                               "key": ctx.idempotency_key, "step": ctx.step_id, "pid": os.getpid()}) + "\n"
            with self._log_lock:
                # O_APPEND: lines from several processes never interleave; fsync: survives a kill -9.
                fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, line.encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)

    async def _produced(self, ctx: StepContext) -> tuple[dict[str, Any], list[NewFile]]:
        settings = self.instance.settings
        fields = dict(settings.get("fields") or {})
        files = []
        for spec in settings.get("files") or []:
            content = spec.get("content", "")
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            files.append(await ctx.new_file(spec["field"], spec.get("filename", f"{spec['field']}.bin"),
                                            spec.get("media_type", "application/octet-stream"), data,
                                            append=bool(spec.get("append", False))))
        return fields, files

    async def _done(self, ctx: StepContext) -> Outcome:
        fields, files = await self._produced(ctx)
        return Outcome.done(fields=fields, files=files, name=str(self.instance.settings.get("outcome", "done")),
                            message=f"étape « {ctx.step_id} » traitée par le connecteur de test {self.instance.id}")


class InstantConnector(_TestConnector):
    """Done at once (after ``delay`` seconds if set), on every call."""

    kind = "test"

    async def start(self, ctx: StepContext) -> Outcome:
        log_path = self.instance.settings.get("log_path")
        if log_path and Path(log_path).exists() and count_in_log(log_path, ctx.idempotency_key):
            self._record(ctx, "replay")
        else:
            self._record(ctx, "start")
        delay = float(self.instance.settings.get("delay", 0) or 0)
        if delay:
            await asyncio.sleep(delay)
        return await self._done(ctx)

    async def check(self, ctx: StepContext) -> Outcome:
        self._record(ctx, "check")
        return await self._done(ctx)


class FailNTimesConnector(_TestConnector):
    """TransientError for the first ``fail_times`` calls of each document step, then done."""

    kind = "test-fail"

    async def start(self, ctx: StepContext) -> Outcome:
        self._record(ctx, "start")
        limit = int(self.instance.settings.get("fail_times", 1))
        log_path = self.instance.settings.get("log_path")
        if log_path:  # several worker processes share the count through the effect log
            failed = sum(1 for e in read_effect_log(log_path) if e["instance"] == self.instance.id
                         and e["op"] == "start" and e["key"].startswith(_step_key(ctx) + ":"))
        else:
            failed = self.counter.count(_step_key(ctx), kind=self.kind, instance=self.instance.id)
        if failed <= limit:
            retry_in = self.instance.settings.get("retry_in")
            raise TransientError(f"échec simulé {failed}/{limit} du connecteur de test {self.instance.id}",
                                 retry_in=float(retry_in) if retry_in is not None else None)
        return await self._done(ctx)


class RejectConnector(_TestConnector):
    """A business refusal (``Outcome.rejected``), on every call."""

    kind = "test-reject"

    async def start(self, ctx: StepContext) -> Outcome:
        self._record(ctx, "start")
        fields, files = await self._produced(ctx)
        reason = str(self.instance.settings.get("reason", "Refus simulé par le connecteur de test"))
        return Outcome.rejected(reason, fields=fields, files=files,
                                name=str(self.instance.settings.get("outcome", "rejected")))


class WaitThenDoneConnector(_TestConnector):
    """Waiting after start, done at the ``checks``-th check (the count travels in ``ctx.data``)."""

    kind = "test-wait"

    def _check_in(self) -> timedelta:
        value = self.instance.settings.get("check_in")
        return timedelta(seconds=float(value)) if value is not None else timedelta(0)

    async def start(self, ctx: StepContext) -> Outcome:
        self._record(ctx, "start")
        return Outcome.waiting(self._check_in(), data={"checks": 0},
                               message=f"en attente d'une réponse ({self.instance.id})")

    async def check(self, ctx: StepContext) -> Outcome:
        self._record(ctx, "check")
        done_at = int(self.instance.settings.get("checks", 1))
        seen = int(ctx.data.get("checks", 0)) + 1
        if seen >= done_at:
            return await self._done(ctx)
        return Outcome.waiting(self._check_in(), data={"checks": seen})

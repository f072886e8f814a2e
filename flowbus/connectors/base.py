"""The connector contract: what a step family implements and what it receives.

The engine decides, connectors act (STYLE.md habit 5).  A connector never changes a
document's state nor writes the journal: it returns an ``Outcome`` and the engine records
it together with the state change, in one transaction.

Lifecycle of one step run::

    outcome = await connector.start(ctx)          # the outside effect, keyed by ctx.idempotency_key
    while outcome.status == "waiting":            # e.g. waiting for the préfecture's AR
        ... delayed bus message after outcome.check_in ...
        outcome = await connector.check(ctx)      # ctx.data holds what start()/check() returned

Raise ``TransientError`` for a failure that may pass (network, HTTP 5xx): the engine retries
per the step's retry policy.  Raise ``PermanentError`` when retrying cannot help: the
document goes to a visible error state.  Return ``Outcome.rejected(reason)`` for a business
refusal (signer refused, préfecture refused): that is an outcome the flow routes, not an error.

Redelivery: the same step run can be delivered twice (worker killed after the effect, before
the ack).  ``ctx.idempotency_key`` is stable across redeliveries of one attempt; a connector
whose remote system cannot deduplicate records the key (``ctx.data`` is persisted only with
an outcome, so use the remote system's own lookup or the connector's own table).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from flowbus.blobs.base import BlobStore
from flowbus.errors import NotFound, PermanentError
from flowbus.models import BlobRef, Document

if TYPE_CHECKING:
    from flowbus.app import Runtime


@dataclass(frozen=True)
class NewFile:
    """A file a connector produced (signed PDF, AR, PES_Acquit…), already in the BlobStore."""

    field: str
    filename: str
    media_type: str
    blob: BlobRef
    append: bool = False  # for a ``files`` field: add after the existing files instead of replacing


@dataclass(frozen=True)
class Outcome:
    """What a step run produced.

    ``status``: ``done`` (the step is over), ``waiting`` (check again in ``check_in``),
    ``rejected`` (a business refusal, routed by the flow).  ``name`` is the outcome name the
    flow's ``on:`` map routes (defaults to the status; a connector may return e.g. ``"refused"``
    or ``"anomaly"`` to let flows distinguish cases).
    """

    status: Literal["done", "waiting", "rejected"]
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[NewFile, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    check_in: timedelta | None = None
    reason: str | None = None
    message: str | None = None  # a short French sentence for the journal ("Acte transmis à la préfecture")

    @classmethod
    def done(cls, *, fields: Mapping[str, Any] | None = None, files: list[NewFile] | tuple[NewFile, ...] = (),
             data: Mapping[str, Any] | None = None, name: str = "done", message: str | None = None) -> Outcome:
        return cls("done", name, fields or {}, tuple(files), data or {}, None, None, message)

    @classmethod
    def waiting(cls, check_in: timedelta, *, data: Mapping[str, Any] | None = None,
                fields: Mapping[str, Any] | None = None, files: list[NewFile] | tuple[NewFile, ...] = (),
                message: str | None = None) -> Outcome:
        return cls("waiting", "waiting", fields or {}, tuple(files), data or {}, check_in, None, message)

    @classmethod
    def rejected(cls, reason: str, *, fields: Mapping[str, Any] | None = None,
                 files: list[NewFile] | tuple[NewFile, ...] = (), data: Mapping[str, Any] | None = None,
                 name: str = "rejected") -> Outcome:
        return cls("rejected", name, fields or {}, tuple(files), data or {}, None, reason, reason)


@dataclass(frozen=True)
class ConnectorInstance:
    """A configured connector: ``id`` is what a flow step names, ``kind`` selects the class."""

    id: str
    family: str
    kind: str
    entity_id: str | None  # None: global, available to every entity
    settings: Mapping[str, Any]
    secret_keys: frozenset[str] = frozenset()  # settings never returned by the API nor logged

    def redacted(self) -> dict[str, Any]:
        return {k: ("********" if k in self.secret_keys else v) for k, v in self.settings.items()}


@dataclass
class StepContext:
    """Everything a connector may use for one step run."""

    runtime: Runtime
    document: Document
    flow_id: str
    step_id: str
    params: Mapping[str, Any]  # the step's ``params`` from the flow YAML
    instance: ConnectorInstance
    attempt: int
    idempotency_key: str  # f"{document_id}:{step_id}:{attempt}" — stable across redeliveries
    data: dict[str, Any]  # connector state carried from the previous start()/check()
    started_at: datetime  # when the step first started (deadlines count from here)
    log: Any  # structlog logger bound with document, flow, step, attempt

    @property
    def blobs(self) -> BlobStore:
        return self.runtime.blobs

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.instance.settings

    def file(self, field_name: str, index: int = 0):  # -> FileRef
        files = self.document.files_of(field_name)
        if len(files) <= index:
            raise PermanentError(f"the document has no file in field {field_name!r}", field=field_name,
                                 hint="attach the file, then retry the step")
        return files[index]

    def files(self, field_name: str) -> list:
        return self.document.files_of(field_name)

    def file_chunks(self, field_name: str, index: int = 0) -> AsyncIterator[bytes]:
        return self.blobs.open(self.file(field_name, index).blob_key)

    async def file_bytes(self, field_name: str, index: int = 0) -> bytes:
        try:
            return await self.blobs.read(self.file(field_name, index).blob_key)
        except NotFound as exc:
            raise PermanentError(f"the bytes of field {field_name!r} are missing from the blob store",
                                 field=field_name) from exc

    async def file_to_path(self, field_name: str, directory: Path, index: int = 0) -> Path:
        ref = self.file(field_name, index)
        path = directory / Path(ref.filename).name
        with path.open("wb") as out:
            async for chunk in self.blobs.open(ref.blob_key):
                out.write(chunk)
        return path

    async def new_file(self, field_name: str, filename: str, media_type: str,
                       content: bytes | AsyncIterable[bytes], *, append: bool = False) -> NewFile:
        """Store produced bytes in the BlobStore; attach them by returning the NewFile in an Outcome."""
        if isinstance(content, (bytes, bytearray)):
            from flowbus.blobs.base import put_bytes
            ref = await put_bytes(self.blobs, bytes(content))
        else:
            ref = await self.blobs.put(content)
        return NewFile(field_name, filename, media_type, ref, append)


class Connector(Protocol):
    """A step family implementation.  Constructed once per (instance, runtime)."""

    family: ClassVar[str]  # "signature", "tdt-actes", "tdt-helios", "mailsec", "ged", "sae", "notify", …
    kind: ClassVar[str]  # "local", "iparapheur", "s2low", "smtp", "store", "asalae", "test", …
    secret_keys: ClassVar[frozenset[str]]  # setting names that are secrets

    def __init__(self, instance: ConnectorInstance, runtime: Runtime) -> None: ...

    async def start(self, ctx: StepContext) -> Outcome:
        """Perform the outside effect (idempotent on ctx.idempotency_key)."""

    async def check(self, ctx: StepContext) -> Outcome:
        """For waiting steps: ask the outside system where things stand."""


class BaseConnector:
    """Convenience base: stores instance and runtime; ``check`` defaults to an error."""

    family: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    secret_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, instance: ConnectorInstance, runtime: Runtime) -> None:
        self.instance = instance
        self.runtime = runtime

    async def start(self, ctx: StepContext) -> Outcome:  # pragma: no cover - abstract
        raise PermanentError(f"connector {self.kind!r} cannot start steps")

    async def check(self, ctx: StepContext) -> Outcome:
        raise PermanentError(f"connector {self.kind!r} does not wait on an outside answer")

    async def close(self) -> None:
        return None

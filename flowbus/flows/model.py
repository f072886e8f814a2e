"""The flow model: what a YAML flow definition becomes (frozen dataclasses, no I/O).

Every element keeps the ``SourcePosition`` (file, 1-based line and column) it was read
from, so a later check (unknown connector instance, unknown field in a condition) can still
point at the exact line.  The format itself is documented in docs/flows.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from flowbus.errors import NotFound, SourcePosition

if TYPE_CHECKING:
    from flowbus.flows.expr import Expr

FIELD_TYPES = ("text", "date", "number", "boolean", "choice", "email", "file", "files")
FILE_TYPES = ("file", "files")
# States a document can be in whatever its flow; a flow cannot declare them.
BUILTIN_STATES = ("draft", "running", "waiting", "error", "done", "cancelled")
# The named state every flow has, the default target of a ``rejected`` outcome.
DEFAULT_REJECTED_STATE = "rejected"

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = timedelta(seconds=10)
DEFAULT_MAX_BACKOFF = timedelta(minutes=10)
DEFAULT_TIMEOUT = timedelta(minutes=5)
DEFAULT_CHECK_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class FieldDef:
    """One field of the document a flow routes."""

    name: str
    type: str  # one of FIELD_TYPES
    label: str
    required: bool = False
    pattern: str | None = None  # text only; the whole value must match
    max_length: int | None = None  # text only
    choices: Mapping[str, str] | None = None  # choice only: value → French label
    default: Any = None
    max_size: int | None = None  # file/files only, bytes
    media_types: tuple[str, ...] | None = None  # file/files only
    content: str | None = None  # file/files only: pdf, xml, pes_aller, actes (checked at upload, flowbus.filecheck)
    produced: bool = False  # filled by the steps, not by people (shown read-only in the forms)
    position: SourcePosition | None = None

    @property
    def is_file(self) -> bool:
        return self.type in FILE_TYPES


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing step (TransientError) is tried, and how long to wait in between."""

    attempts: int = DEFAULT_ATTEMPTS
    backoff: timedelta = DEFAULT_BACKOFF
    max_backoff: timedelta = DEFAULT_MAX_BACKOFF


@dataclass(frozen=True)
class WaitPolicy:
    """For a step waiting on an outside answer: poll period and optional deadline."""

    check_every: timedelta = DEFAULT_CHECK_EVERY
    deadline: timedelta | None = None


@dataclass(frozen=True)
class Target:
    """Where an outcome leads: a step, a named state, or the end of the flow."""

    kind: Literal["step", "state", "end"]
    name: str | None = None
    position: SourcePosition | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.kind == "end":
            return "end"
        if self.kind == "state":
            return f"{{state: {self.name}}}"
        return str(self.name)


END = Target("end", None)


@dataclass(frozen=True)
class StateDef:
    """A named state a document can end in (« Refusé », « Annulé par la préfecture »…)."""

    name: str
    label: str
    terminal: bool = True
    position: SourcePosition | None = None


@dataclass(frozen=True)
class Step:
    """One step: a connector family action run through a configured connector instance."""

    id: str
    label: str
    family: str
    connector: str
    when: Expr | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeout: timedelta = DEFAULT_TIMEOUT
    wait: WaitPolicy | None = None
    on: Mapping[str, Target] = field(default_factory=dict)
    position: SourcePosition | None = None
    # positions of this step's keys' values ("family", "connector", "when", …), for later checks
    where: Mapping[str, SourcePosition] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Flow:
    id: str
    label: str
    description: str
    fields: tuple[FieldDef, ...]
    steps: tuple[Step, ...]
    start: str | None  # first step id; None for a flow without steps
    states: Mapping[str, StateDef]
    source: str  # the file it was read from
    columns: tuple[str, ...] = ()  # fields shown as columns of the document list filtered on this flow
    version: int = 0  # the stored version of this content (flowbus.flows.catalog); 0 when not recorded
    position: SourcePosition | None = None
    where: Mapping[str, SourcePosition] = field(default_factory=dict, compare=False)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise NotFound(f"flow {self.id!r} has no step {step_id!r}", field="step",
                       hint=f"steps: {', '.join(s.id for s in self.steps) or '(none)'}")

    def has_step(self, step_id: str) -> bool:
        return any(s.id == step_id for s in self.steps)

    def field(self, name: str) -> FieldDef:
        for f in self.fields:
            if f.name == name:
                return f
        raise NotFound(f"flow {self.id!r} has no field {name!r}", field=name,
                       hint=f"fields: {', '.join(f.name for f in self.fields) or '(none)'}")

    def has_field(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)

    def next_step_id(self, step_id: str) -> str | None:
        """The step after ``step_id`` in file order, or None for the last one."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id)
        return ids[i + 1] if i + 1 < len(ids) else None

    def state(self, name: str) -> StateDef:
        try:
            return self.states[name]
        except KeyError:
            raise NotFound(f"flow {self.id!r} has no state {name!r}", field="state") from None

    def state_label(self, name: str) -> str:
        builtin = {"draft": "Brouillon", "running": "En cours", "waiting": "En attente", "error": "En erreur",
                   "done": "Terminé", "cancelled": "Annulé"}
        if name in builtin:
            return builtin[name]
        st = self.states.get(name)
        return st.label if st else name

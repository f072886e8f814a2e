"""The flows in service: read from config/flows, each valid content recorded as a numbered version in the store, an invalid file refused alone (its last good version stays in service), reloads without restart.

A document is pinned to the version current when it is started (``documents.flow_version``) and
finishes on it, whatever is reloaded meanwhile; a draft follows the current version. Every
process keeps the versions it has met (``Runtime.flow_history``); a reload made by one process
is numbered in ``flow_reloads`` and picked up by the others at their next heartbeat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from flowbus.clock import isoformat
from flowbus.errors import FlowDefinitionError, SourcePosition
from flowbus.flows.loader import flow_from_text
from flowbus.flows.model import Flow
from flowbus.store.base import Tx

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FlowProblem:
    """A flow file refused at the last load: its errors, and the version kept in service instead (if any)."""
    file: str
    flow_id: str | None
    errors: tuple[FlowDefinitionError, ...]
    kept_version: int | None = None

    def summary(self) -> str:
        kept = (f" ; la version {self.kept_version} reste en service" if self.kept_version
                else " ; ce flux n'est pas disponible")
        return f"{Path(self.file).name} refusé ({len(self.errors)} erreur(s)){kept}"


@dataclass
class Loaded:
    flows: dict[str, Flow]
    problems: list[FlowProblem] = field(default_factory=list)
    new_versions: list[tuple[str, int]] = field(default_factory=list)  # (flow id, version) recorded by this load


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flow_files(flows_dir: Path) -> list[Path]:
    return sorted(flows_dir.glob("*.yml")) + sorted(flows_dir.glob("*.yaml"))


def _read(path: Path) -> tuple[str | None, FlowDefinitionError | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, FlowDefinitionError(f"cannot read the flow file: {exc}", position=SourcePosition(str(path), 1, 1))


def check_files(flows_dir: Path, *, families: Any, instances: set[str] | None
                ) -> tuple[dict[str, tuple[Flow, str]], list[FlowProblem]]:
    """Read and validate each flow file alone: (flow id → (flow, text)) of the valid ones, and the problems."""
    from flowbus.flows.validate import validate_flow

    valid: dict[str, tuple[Flow, str]] = {}
    problems: list[FlowProblem] = []
    for path in flow_files(flows_dir):
        text, unreadable = _read(path)
        if text is None:
            problems.append(FlowProblem(str(path), path.stem, (unreadable,) if unreadable else ()))
            continue
        flow, errors = flow_from_text(text, str(path))
        if flow is not None and not errors:
            errors = validate_flow(flow, families=families, instances=instances)
        flow_id = flow.id if flow is not None and flow.id else None
        if not errors and flow_id in valid:
            errors = [FlowDefinitionError(f'duplicate flow id "{flow_id}" (also in {valid[flow_id][0].source})',
                                          position=flow.where.get("id", flow.position), hint="each flow id is unique")]
        if errors or flow is None:
            problems.append(FlowProblem(str(path), flow_id, tuple(errors)))
            continue
        valid[flow.id] = (flow, text)
    return valid, problems


async def load(tx: Tx, flows_dir: Path, *, families: Any, instances: set[str] | None, at: Any) -> Loaded:
    """Read every flow file, validate each alone, record new contents as versions; see the module's docstring."""
    valid, problems = check_files(flows_dir, families=families, instances=instances)
    for problem in problems:
        log.warning("flows.file_refused", file=problem.file, flow=problem.flow_id, errors=len(problem.errors),
                    first=str(problem.errors[0]) if problem.errors else None)
    loaded = Loaded({}, [])
    for flow_id, (flow, text) in valid.items():
        version, new = await record(tx, flow, text, at=at)
        loaded.flows[flow_id] = replace(flow, version=version)
        if new:
            loaded.new_versions.append((flow_id, version))
    for problem in problems:  # a flow that was valid before keeps its last good version in service
        problem = await identify(tx, problem)
        kept = None
        if problem.flow_id and problem.flow_id not in loaded.flows:
            last = await latest(tx, problem.flow_id)
            if last is not None:
                loaded.flows[problem.flow_id] = last
                kept = last.version
        loaded.problems.append(replace(problem, kept_version=kept))
    return loaded


async def record(tx: Tx, flow: Flow, text: str, *, at: Any) -> tuple[int, bool]:
    """The version number of this content of the flow, recording it if it is new: (version, new)."""
    d = digest(text)
    for _ in range(5):  # another process may record a version at the same moment: read again
        row = await tx.fetchrow("SELECT version FROM flow_versions WHERE flow_id = $1 AND digest = $2", flow.id, d)
        if row is not None:
            return int(row["version"]), False
        version = int(await tx.fetchval("SELECT COALESCE(MAX(version), 0) + 1 FROM flow_versions WHERE flow_id = $1",
                                        flow.id))
        if await tx.execute("INSERT INTO flow_versions (flow_id, version, digest, source_file, body, recorded_at) "
                            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                            flow.id, version, d, flow.source, text, isoformat(at)):
            log.info("flows.version_recorded", flow=flow.id, version=version, file=flow.source)
            return version, True
    raise RuntimeError(f"could not record a version of flow {flow.id}")


async def identify(tx: Tx, problem: FlowProblem) -> FlowProblem:
    """The problem with its flow id even when the file no longer says it (a syntax error): the flow last recorded
    from that file, else the flow named like the file."""
    if problem.flow_id:
        return problem
    flow_id = await tx.fetchval("SELECT flow_id FROM flow_versions WHERE source_file = $1 ORDER BY recorded_at DESC "
                                "LIMIT 1", problem.file)
    if flow_id is None:
        stem = Path(problem.file).stem
        if await tx.fetchval("SELECT 1 FROM flow_versions WHERE flow_id = $1 LIMIT 1", stem):
            flow_id = stem
    return replace(problem, flow_id=flow_id) if flow_id else problem


def _parse(row: dict[str, Any]) -> Flow | None:
    flow, errors = flow_from_text(row["body"], row["source_file"])
    if flow is None or errors:  # stored because it was valid: only a loader change could break it
        log.error("flows.stored_version_unreadable", flow=row["flow_id"], version=row["version"],
                  errors=[str(e) for e in errors])
        return None
    return replace(flow, version=int(row["version"]))


async def latest(tx: Tx, flow_id: str) -> Flow | None:
    row = await tx.fetchrow("SELECT * FROM flow_versions WHERE flow_id = $1 ORDER BY version DESC LIMIT 1", flow_id)
    return None if row is None else _parse(row)


async def stored(tx: Tx, flow_id: str, version: int) -> Flow | None:
    row = await tx.fetchrow("SELECT * FROM flow_versions WHERE flow_id = $1 AND version = $2", flow_id, version)
    return None if row is None else _parse(row)


async def versions(tx: Tx, flow_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The flow's versions, newest first (without their text)."""
    return await tx.fetch("SELECT flow_id, version, digest, source_file, recorded_at FROM flow_versions "
                          "WHERE flow_id = $1 ORDER BY version DESC LIMIT $2", flow_id, limit)


async def version(tx: Tx, flow_id: str, number: int) -> dict[str, Any] | None:
    """One version with its text (``body``)."""
    return await tx.fetchrow("SELECT * FROM flow_versions WHERE flow_id = $1 AND version = $2", flow_id, number)


async def generation(tx: Tx) -> int:
    return int(await tx.fetchval("SELECT COALESCE(MAX(generation), 0) FROM flow_reloads"))


async def announce(tx: Tx, *, actor: str, summary: str, at: Any) -> int:
    """Number a reload so that the other processes reload too; the new generation."""
    for _ in range(5):
        gen = await generation(tx) + 1
        if await tx.execute("INSERT INTO flow_reloads (generation, at, actor, summary) VALUES ($1, $2, $3, $4) "
                            "ON CONFLICT DO NOTHING", gen, isoformat(at), actor, summary[:2000]):
            return gen
    raise RuntimeError("could not number the flow reload")


async def reloads(tx: Tx, limit: int = 10) -> list[dict[str, Any]]:
    return await tx.fetch("SELECT * FROM flow_reloads ORDER BY generation DESC LIMIT $1", limit)


__all__ = ["FlowProblem", "Loaded", "announce", "check_files", "identify", "digest", "flow_files", "generation", "latest", "load", "record",
           "reloads", "stored", "version", "versions"]

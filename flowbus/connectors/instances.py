"""Connector instances: configured globally or per entity, inherited from the parent entity.

Two sources, the API's (table ``connector_instances``) first, then YAML files under
``config/connectors/*.yml``::

    instances:
      - id: tdt-actes            # what a flow step names in ``connector:``
        family: tdt-actes
        kind: s2low
        entity: null             # null: every entity; an entity id: that entity and its children
        settings:
          url: https://s2low.example.fr
          password: {env: S2LOW_PASSWORD}   # read from the environment, never written in the file

Secrets (the connector class's ``secret_keys`` and any setting named like a password, token
or key) are never returned by the API nor logged: ``ConnectorInstance.redacted()``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from flowbus.clock import isoformat
from flowbus.connectors.base import ConnectorInstance
from flowbus.connectors.registry import CONNECTOR_CLASSES, check_allowed, connector_class
from flowbus.errors import ConfigError, NotConfigured, NotFound, ValidationError
from flowbus.outbound import STRICT, OutboundPolicy, endpoint_host
from flowbus.people import audit
from flowbus.store import repo
from flowbus.store.base import Tx

SECRET_SUFFIXES = ("password", "secret", "token", "p12_base64", "private_key", "api_key")


def secret_keys_for(family: str, kind: str, settings: dict[str, Any]) -> frozenset[str]:
    declared: frozenset[str] = frozenset()
    try:
        declared = frozenset(getattr(connector_class(family, kind), "secret_keys", frozenset()))
    except (ConfigError, ImportError, AttributeError):
        pass
    guessed = {k for k in settings if k.lower().endswith(SECRET_SUFFIXES)}
    return declared | guessed


def _resolve_env(settings: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and set(value) == {"env"}:
            var = value["env"]
            if var not in os.environ:
                raise ConfigError(f"{where}: setting {key!r} reads the environment variable {var}, which is not set",
                                  field=key, hint=f"export {var}=… before starting flowbus")
            out[key] = os.environ[var]
        else:
            out[key] = value
    return out


def make_instance(data: dict[str, Any], where: str) -> ConnectorInstance:
    for required in ("id", "family", "kind"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise ConfigError(f"{where}: connector instance without {required!r}", field=required)
    family, kind = data["family"], data["kind"]
    if family not in CONNECTOR_CLASSES:
        raise ConfigError(f"{where}: unknown connector family {family!r}", field="family",
                          hint=f"known families: {', '.join(sorted(CONNECTOR_CLASSES))}")
    if kind not in CONNECTOR_CLASSES[family]:
        raise ConfigError(f"{where}: connector family {family!r} has no kind {kind!r}", field="kind",
                          hint=f"known kinds: {', '.join(sorted(CONNECTOR_CLASSES[family]))}")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: 'settings' must be a mapping", field="settings")
    settings = _resolve_env(settings, where)
    return ConnectorInstance(data["id"], family, kind, data.get("entity") or None, settings,
                             secret_keys_for(family, kind, settings))


NOT_OUTBOUND = frozenset({"public_base_url"})  # URLs flowbus gives out (links in mails), never calls


async def check_outbound(policy: OutboundPolicy, settings: dict[str, Any]) -> None:
    """Every address the settings make flowbus connect to (``url``/``*_url``, ``host``/``*_host``, an S3
    ``endpoint``) is allowed by the outbound policy; else OutboundRefused naming the setting."""
    for key, value in settings.items():
        if not isinstance(value, str) or not value.strip() or key in NOT_OUTBOUND:
            continue
        if key == "url" or key.endswith("_url"):
            await policy.check_url(value, field=key)
        elif key == "host" or key.endswith("_host"):
            await policy.check_host(value, field=key)
        elif key == "endpoint":
            await policy.check_host(endpoint_host(value), field=key)


def load_yaml_instances(directory: Path) -> list[ConnectorInstance]:
    out: list[ConnectorInstance] = []
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.yml")) + sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        items = data.get("instances", []) if isinstance(data, dict) else []
        for i, item in enumerate(items):
            out.append(make_instance(item, f"{path}: instances[{i}]"))
    return out


class InstanceRegistry:
    """Looks up the instance a step names for a document's entity (walking up the parents)."""

    CACHE_SECONDS = 5.0  # how long a resolution is reused (another process's API change shows within this)

    def __init__(self, yaml_instances: Iterable[ConnectorInstance]) -> None:
        self._yaml: dict[tuple[str, str | None], ConnectorInstance] = {}
        self.box: Any = None  # flowbus.secretbox.SecretBox, set by the runtime: API-managed secrets at rest
        self.outbound: OutboundPolicy = STRICT  # set by the runtime: where saved settings may point
        self._cache: dict[tuple[str, str], tuple[float, ConnectorInstance]] = {}
        for inst in yaml_instances:
            self._yaml[(inst.id, inst.entity_id)] = inst

    @property
    def ids(self) -> set[str]:
        return {i for i, _ in self._yaml}

    def from_files(self, instance_id: str) -> list[ConnectorInstance]:
        """The instances of this id declared in config/connectors/*.yml (and config/demo/ in demonstration)."""
        return [inst for (iid, _entity), inst in self._yaml.items() if iid == instance_id]

    def declared_of_family(self, family: str) -> list[ConnectorInstance]:
        """The instances of this connector family declared in config/connectors/*.yml."""
        return [inst for inst in self._yaml.values() if inst.family == family]

    def declared_in_files(self, instance_id: str, entity_id: str | None) -> bool:
        """Whether this instance comes from config/connectors/*.yml (changed there, not through the API)."""
        return (instance_id, entity_id) in self._yaml

    async def known_ids(self, tx: Tx) -> set[str]:
        rows = await tx.fetch("SELECT DISTINCT id FROM connector_instances")
        return self.ids | {r["id"] for r in rows}

    async def resolve(self, tx: Tx, instance_id: str, entity_id: str) -> ConnectorInstance:
        cached = self._cache.get((instance_id, entity_id))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        inst = await self._resolve(tx, instance_id, entity_id)
        self._cache[(instance_id, entity_id)] = (time.monotonic() + self.CACHE_SECONDS, inst)
        return inst

    async def _resolve(self, tx: Tx, instance_id: str, entity_id: str) -> ConnectorInstance:
        chain = await repo.ancestors(tx, entity_id)
        for eid in [*chain, None]:
            row = await tx.fetchrow("SELECT * FROM connector_instances WHERE id = $1 AND entity_id = $2",
                                    instance_id, eid or "")
            if row is not None:
                return make_instance({"id": row["id"], "family": row["family"], "kind": row["kind"],
                                      "entity": row["entity_id"] or None, "settings": self._open(row["settings"])},
                                     f"connector instance {instance_id!r}")
            inst = self._yaml.get((instance_id, eid))
            if inst is not None:
                return inst
        raise NotConfigured(f"Aucune instance de connecteur « {instance_id} » n'est configurée pour la collectivité "
                            f"{entity_id}, ses collectivités mères ou la plateforme.", field="connector",
                            hint="declare it in config/connectors/*.yml, in the console (« Connecteurs ») or "
                                 "through PUT /api/v1/connectors/{id}")

    async def list_for(self, tx: Tx, entity_id: str | None) -> list[ConnectorInstance]:
        chain = await repo.ancestors(tx, entity_id) if entity_id else []
        seen: dict[str, ConnectorInstance] = {}
        for eid in [*chain, None]:
            for row in await tx.fetch("SELECT * FROM connector_instances WHERE entity_id = $1 ORDER BY id", eid or ""):
                seen.setdefault(row["id"], make_instance(
                    {"id": row["id"], "family": row["family"], "kind": row["kind"],
                     "entity": row["entity_id"] or None, "settings": self._open(row["settings"])}, row["id"]))
            for (iid, ent), inst in sorted(self._yaml.items(), key=lambda kv: kv[0][0]):
                if ent == eid:
                    seen.setdefault(iid, inst)
        return list(seen.values())

    async def save(self, tx: Tx, data: dict[str, Any], *, at: Any, actor: str = "system",
                   demo: bool = True) -> ConnectorInstance:
        """Create or replace an API-managed instance; secrets not re-sent keep their stored value.
        ``demo`` False (a real install): a test kind is refused.

        Journaled as ``admin.connector.saved`` with the settings before and after, secrets masked."""
        try:
            inst = make_instance(data, "connector instance")
            check_allowed(inst, demo=demo)
        except ConfigError as exc:
            raise ValidationError(exc.message, field=exc.field or "kind", hint=exc.hint) from exc
        await check_outbound(self.outbound, inst.settings)
        entity = inst.entity_id or ""
        if entity:
            await repo.get_entity(tx, entity)
        old = await tx.fetchrow("SELECT settings FROM connector_instances WHERE id = $1 AND entity_id = $2",
                                inst.id, entity)
        settings = dict(inst.settings)
        previous = json.loads(old["settings"]) if old is not None else {}
        for key in [k for k, v in settings.items() if v == "********"]:
            if key in previous:  # « keep what is stored »
                settings[key] = previous[key]
            else:  # nothing stored to keep: the setting stays unset
                del settings[key]
        self._cache.clear()
        await tx.execute("DELETE FROM connector_instances WHERE id = $1 AND entity_id = $2", inst.id, entity)
        stored = self.box.seal_settings(settings, inst.secret_keys) if self.box else settings
        await tx.execute("INSERT INTO connector_instances (id, entity_id, family, kind, settings, updated_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6)", inst.id, entity, inst.family, inst.kind,
                         json.dumps(stored), isoformat(at))
        await audit.record(tx, actor=actor, kind="admin.connector.saved", at=at, entity_id=inst.entity_id,
                           instance=inst.id, family=inst.family, connector_kind=inst.kind, secret_keys=inst.secret_keys,
                           before=None if old is None else json.loads(old["settings"]), after=settings)
        return ConnectorInstance(inst.id, inst.family, inst.kind, inst.entity_id, self._open(json.dumps(settings)),
                                 inst.secret_keys)

    def _open(self, stored: str) -> dict[str, Any]:
        settings = json.loads(stored)
        return self.box.open_settings(settings) if self.box else settings

    async def rotate_secrets(self, tx: Tx) -> int:
        """Every stored secret sealed again with the first key (clear ones sealed); returns how many rows."""
        rows = await tx.fetch("SELECT id, entity_id, family, kind, settings FROM connector_instances")
        for row in rows:
            settings = json.loads(row["settings"])
            keys = secret_keys_for(row["family"], row["kind"], self.box.open_settings(settings))
            rotated = {k: self.box.rotate(v) if k in keys else v for k, v in settings.items()}
            await tx.execute("UPDATE connector_instances SET settings = $3 WHERE id = $1 AND entity_id = $2",
                             row["id"], row["entity_id"], json.dumps(rotated))
        self._cache.clear()
        return len(rows)

    async def delete(self, tx: Tx, instance_id: str, entity_id: str | None, *, at: Any = None,
                     actor: str = "system") -> None:
        self._cache.clear()
        old = await tx.fetchrow("SELECT family, kind, settings FROM connector_instances WHERE id = $1 AND entity_id = $2",
                                instance_id, entity_id or "")
        if old is None or not await tx.execute("DELETE FROM connector_instances WHERE id = $1 AND entity_id = $2",
                                               instance_id, entity_id or ""):
            raise NotFound(f"connector instance {instance_id!r} is not configured through the API", field="id")
        if at is not None:
            settings = json.loads(old["settings"])
            await audit.record(tx, actor=actor, kind="admin.connector.deleted", at=at, entity_id=entity_id,
                               instance=instance_id, family=old["family"], connector_kind=old["kind"],
                               secret_keys=secret_keys_for(old["family"], old["kind"], settings), before=settings)

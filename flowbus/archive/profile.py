"""Archiving profiles: per-flow YAML (``config/archive/<flow>.yml``) mapping document fields to SEDA elements.

A profile says how a finished document becomes an ArchiveTransfer: the title, description,
keywords and dates of the top ArchiveUnit (templates over the document's fields), the
appraisal and access rules, a title per file field, and per-entity defaults (ArchivalAgreement,
ArchivalProfile, agency identifiers).  Example::

    version: "2.1"                       # or "2.2"
    title: "Délibération {fields.numero} : {fields.objet}"
    description: "Acte du {fields.date_acte}, transmis au contrôle de légalité."
    description_level: File
    keywords:
      - {content: "{fields.nature}", type: subject}
    start_date: "{fields.date_acte}"
    rules:
      appraisal: {rule: APP-DELIB, final_action: Keep, start_date: "{fields.date_acte}"}
      access: {rule: AR038}
    files:
      arrete: "Acte signé"
      annexes: "Annexe"
    defaults:                            # every entity
      archival_agency: AD34
    entities:                            # per entity id, over the defaults
      commune-demo: {archival_agreement: ACCORD-ACTES, archival_profile: PROFIL-DELIB}

Templates: ``{fields.<name>}``, ``{document.id}``, ``{document.created_at}``, ``{entity.id}``,
``{entity.name}``, ``{entity.siren}``, ``{now}``; a missing value renders as an empty string
and an element that renders empty is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from flowbus.errors import ConfigError

AGENCY_KEYS = ("archival_agreement", "archival_profile", "archival_agency", "transferring_agency",
               "originating_agency", "submission_agency", "access_rule", "appraisal_rule",
               "appraisal_final_action")
# a value written « <…> » in a shipped profile is an example to replace (the archives service's own identifier):
# nothing is archived under it (flowbus.archive.steps refuses, doctor names it)
_PLACEHOLDER = re.compile(r"^\s*<[^>]*>\s*$")
_TEMPLATE = re.compile(r"\{([a-z_]+(?:\.[A-Za-z0-9_\-]+)*)\}")
# SEDA 2.1/2.2 CodeKeywordType
KEYWORD_TYPES = {"corpname", "famname", "geogname", "name", "occupation", "persname", "subject", "genreform"}
_LEVELS = {"Fonds", "Subfonds", "Class", "Collection", "Series", "Subseries", "RecordGrp", "SubGrp",
           "File", "Item", "OtherLevel"}


@dataclass(frozen=True)
class Rule:
    rule: str
    start_date: str | None = None
    final_action: str | None = None  # appraisal only: Keep | Destroy


@dataclass(frozen=True)
class Profile:
    """A parsed archiving profile (templates not yet rendered)."""

    name: str
    version: str = "2.1"
    title: str = "{document.id}"
    description: str | None = None
    description_level: str = "File"
    keywords: tuple[tuple[str, str | None], ...] = ()
    start_date: str | None = None
    end_date: str | None = None
    appraisal: Rule | None = None
    access: Rule | None = None
    comment: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)  # field → ArchiveUnit title
    defaults: Mapping[str, str] = field(default_factory=dict)
    entities: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def agencies(self, entity_id: str, entity_siren: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Per-entity defaults: profile defaults < entity section < connector settings."""
        values: dict[str, str] = {}
        if entity_siren:
            values.update(transferring_agency=entity_siren, originating_agency=entity_siren,
                          submission_agency=entity_siren)
        values.update({k: str(v) for k, v in self.defaults.items()})
        values.update({k: str(v) for k, v in self.entities.get(entity_id, {}).items()})
        for key in AGENCY_KEYS:
            if overrides and overrides.get(key):
                values[key] = str(overrides[key])
        return values


def placeholders(values: Mapping[str, Any]) -> list[str]:
    """The keys whose value is still an example « <…> » to replace."""
    return sorted(k for k, v in values.items() if isinstance(v, str) and _PLACEHOLDER.match(v))


def render(template: str | None, context: Mapping[str, Any]) -> str:
    """Replace ``{a.b}`` placeholders with values from ``context`` (nested mappings)."""
    if template is None:
        return ""

    def value(match: re.Match[str]) -> str:
        current: Any = context
        for part in match.group(1).split("."):
            if isinstance(current, Mapping) and part in current:
                current = current[part]
            else:
                return ""
        if current is None:
            return ""
        if isinstance(current, datetime):
            return current.date().isoformat()
        if isinstance(current, date):
            return current.isoformat()
        if isinstance(current, (list, tuple)):
            return ", ".join(str(v) for v in current)
        return str(current)

    return _TEMPLATE.sub(value, str(template)).strip()


def _rule(raw: Any, where: str, *, appraisal: bool) -> Rule | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"rule": raw}
    if not isinstance(raw, Mapping) or not raw.get("rule"):
        raise ConfigError(f"{where}: a rule needs a 'rule' identifier", field="rules",
                          hint="e.g. access: {rule: AR038}")
    action = raw.get("final_action")
    if appraisal and action not in (None, "Keep", "Destroy"):
        raise ConfigError(f"{where}: final_action must be Keep or Destroy, not {action!r}", field="final_action")
    return Rule(str(raw["rule"]), raw.get("start_date"), action if appraisal else None)


def parse_profile(raw: Mapping[str, Any], name: str, where: str = "<profile>") -> Profile:
    """Build a Profile from parsed YAML; every error names the file and the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: an archiving profile is a mapping", hint="see flowbus/archive/profile.py")
    version = str(raw.get("version", "2.1"))
    if version not in ("2.1", "2.2"):
        raise ConfigError(f"{where}: version must be \"2.1\" or \"2.2\", not {version!r}", field="version")
    level = str(raw.get("description_level", "File"))
    if level not in _LEVELS:
        raise ConfigError(f"{where}: unknown description_level {level!r}", field="description_level",
                          hint=f"use one of {', '.join(sorted(_LEVELS))}")
    keywords = []
    for i, kw in enumerate(raw.get("keywords") or []):
        if isinstance(kw, str):
            keywords.append((kw, None))
        elif isinstance(kw, Mapping) and kw.get("content"):
            if kw.get("type") is not None and kw["type"] not in KEYWORD_TYPES:
                raise ConfigError(f"{where}: keywords[{i}] has an unknown type {kw['type']!r}", field="keywords",
                                  hint=f"use one of {', '.join(sorted(KEYWORD_TYPES))}")
            keywords.append((str(kw["content"]), kw.get("type")))
        else:
            raise ConfigError(f"{where}: keywords[{i}] needs a 'content'", field="keywords")
    rules = raw.get("rules") or {}
    files = raw.get("files") or {}
    if not isinstance(files, Mapping):
        raise ConfigError(f"{where}: 'files' maps a document field to a title", field="files")
    entities = raw.get("entities") or {}
    unknown = [k for k in (raw.get("defaults") or {}) if k not in AGENCY_KEYS]
    for section in entities.values():
        unknown += [k for k in section if k not in AGENCY_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown default key(s) {', '.join(sorted(set(unknown)))}", field="defaults",
                          hint=f"known keys: {', '.join(AGENCY_KEYS)}")
    return Profile(
        name=name, version=version, title=str(raw.get("title", "{document.id}")),
        description=raw.get("description"), description_level=level, keywords=tuple(keywords),
        start_date=raw.get("start_date"), end_date=raw.get("end_date"),
        appraisal=_rule(rules.get("appraisal"), where, appraisal=True),
        access=_rule(rules.get("access"), where, appraisal=False),
        comment=raw.get("comment"), files={str(k): str(v) for k, v in files.items()},
        defaults=dict(raw.get("defaults") or {}), entities={str(k): dict(v) for k, v in entities.items()})


def load_profile(config_dir: Path, *names: str | None) -> Profile:
    """Load ``config/archive/<name>.yml`` for the first name that has a file (profile param, then flow id).

    Raises:
        ConfigError: no such file, unreadable YAML, or an invalid profile.
    """
    directory = Path(config_dir) / "archive"
    tried = []
    for name in names:
        if not name:
            continue
        path = directory / f"{name}.yml"
        tried.append(str(path))
        if path.is_file():
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: invalid YAML: {exc}") from None
            return parse_profile(raw, name, str(path))
    raise ConfigError(f"no archiving profile found (tried {', '.join(tried) or 'nothing'})", field="profile",
                      hint="add config/archive/<flow>.yml or set the step's params.profile")

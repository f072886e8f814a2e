"""Checks of a flow's archiving profiles before any document reaches them: each archive step's profile exists and parses, and every field it reads and every file it names belongs to the flow (``flowbus doctor``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flowbus.archive.profile import load_profile, placeholders
from flowbus.errors import ConfigError

_FIELD = re.compile(r"\{fields\.([A-Za-z0-9_]+)")


def check(flow: Any, config_dir: Path, configured: set[str] | frozenset[str] = frozenset()
          ) -> list[tuple[str, bool, str]]:
    """(step id, ok, detail) for each archive step (family ``sae``) of the flow; ``configured``: the identifiers
    (archival_agency…) some SAE connector instance sets, which replace the profile's examples « <…> »."""
    out = []
    for step in flow.steps:
        if step.family != "sae":
            continue
        name = step.params.get("profile")
        try:
            profile = load_profile(config_dir, name, flow.id)
        except ConfigError as exc:
            out.append((step.id, False, f"profil d'archivage absent ou invalide : {exc.message}"))
            continue
        path = Path(config_dir) / "archive" / f"{name or flow.id}.yml"
        if not path.is_file():
            path = Path(config_dir) / "archive" / f"{flow.id}.yml"
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        known = {f.name for f in flow.fields}
        unknown_fields = sorted({m for m in _FIELD.findall(text) if m not in known})
        unknown_files = sorted(k for k in profile.files if k not in known)
        problems = []
        if unknown_fields:
            problems.append(f"lit des champs que le flux n'a pas : {', '.join(unknown_fields)}")
        if unknown_files:
            problems.append(f"nomme des fichiers que le flux n'a pas : {', '.join(unknown_files)}")
        examples = [k for k in placeholders(profile.defaults) if k not in configured]
        if examples:
            problems.append(f"{', '.join(examples)} : encore l'exemple du profil, renseigné par aucun connecteur SAE "
                            "(rien ne sera versé)")
        out.append((step.id, not problems, "; ".join(problems) or f"profil {path.name} (SEDA {profile.version})"))
    return out


__all__ = ["check"]

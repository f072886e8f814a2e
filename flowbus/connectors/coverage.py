"""What a real install has not configured, for `flowbus doctor`: per connector instance the shipped flows
name, whether it serves the whole platform or which collectivités lack it; test connectors outside the
demonstration.  Reads the configured instances (files and database) and the entity tree by index, once
per instance id, never every (collectivité, step) pair."""

from __future__ import annotations

from typing import Any

from flowbus.connectors.registry import FAMILY_WORDS, is_test_kind
from flowbus.store import repo

Check = tuple[str, bool, str, str | None]  # (name, ok, detail, fix)
SHOWN = 5  # collectivités named in a report line


async def checks(store: Any, settings: Any, flows: dict[str, Any], registry: Any) -> list[Check]:
    out: list[Check] = []
    used: dict[str, tuple[str, list[str]]] = {}  # instance id → (family, flow labels)
    for flow in sorted(flows.values(), key=lambda f: f.label):
        for step in flow.steps:
            family, labels = used.setdefault(step.connector, (step.family, []))
            if flow.label not in labels:
                labels.append(flow.label)
    async with store.transaction() as tx:
        active = [r["id"] for r in await tx.fetch("SELECT id FROM entities WHERE active = 1")]
        for instance_id, (family, labels) in sorted(used.items()):
            what = f"connecteur « {instance_id} » ({FAMILY_WORDS.get(family, family)}) des flux {', '.join(labels)}"
            rows = await tx.fetch("SELECT entity_id, kind, family FROM connector_instances WHERE id = $1",
                                  instance_id)
            declared = [(r["entity_id"] or None, r["family"], r["kind"]) for r in rows]
            declared += [(inst.entity_id, inst.family, inst.kind) for inst in registry.from_files(instance_id)]
            tests = [d for d in declared if is_test_kind(d[1], d[2])]
            if tests and not settings.demo:
                out.append((f"connecteur {instance_id}", False, f"{what} : connecteur de test, qui n'envoie rien "
                            "(refusé hors démonstration)", "configurez le vrai service dans « Connecteurs » ou "
                            "config/connectors/*.yml"))
                continue
            if any(entity is None for entity, _f, _k in declared):
                out.append((f"connecteur {instance_id}", True, f"{what} : configuré pour toute la plateforme", None))
                continue
            covered = set(await repo.subtree(tx, sorted({e for e, _f, _k in declared if e})))
            missing = [e for e in active if e not in covered]
            if not missing and active:
                out.append((f"connecteur {instance_id}", True,
                            f"{what} : configuré pour les {len(active)} collectivités actives", None))
                continue
            names = [e.name for e in (await repo.entities_by_ids(tx, missing[:SHOWN])).values()]
            detail = (f"{what} : non configuré pour {len(missing)} collectivité(s) active(s) sur {len(active)}"
                      + (f" (dont {', '.join(sorted(names))})" if names else "")) if active else \
                f"{what} : configuré pour aucune collectivité (aucune n'est encore créée)"
            out.append((f"connecteur {instance_id}", False, detail,
                        "configurez-le pour la plateforme, ou pour chaque collectivité (ou une collectivité mère), "
                        "dans « Connecteurs » ou config/connectors/*.yml ; sans lui, l'étape met le document en "
                        "erreur"))
    return out

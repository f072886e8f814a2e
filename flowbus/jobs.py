"""The platform's scheduled jobs (run by ``flowbus.scheduler`` inside the server): following flow reloads, resending overdue step messages, the préfecture letters and PES_Retour relève, the notification digests, and purges of what has expired."""

from __future__ import annotations

import json
from typing import Any

import structlog

from flowbus.errors import FlowbusError
from flowbus.scheduler import Job, daily_at, every

log = structlog.get_logger(__name__)
INBOX_EVERY = 900  # seconds: S²LOW is read every quarter of an hour, as Pastell's cron does
INBOXES = {"tdt-actes": "letters_flow", "tdt-helios": "retours_flow"}  # family → the setting naming the flow


async def follow_flow_reloads(rt: Any) -> str | None:
    """Reload the flows when another process (or ``flowbus flows reload``) numbered a newer reload."""
    from flowbus.flows import catalog
    async with rt.store.transaction() as tx:
        generation = await catalog.generation(tx)
    if generation <= rt.flows_generation:
        return None
    await rt.reload_flows(actor=f"rechargement n° {generation}", announce=False)
    return f"flows reloaded (generation {generation})"


async def inboxes(rt: Any) -> list[tuple[str, str, str, str]]:
    """(instance id, entity id, family, flow id) of every S²LOW instance of a collectivité that names a flow for
    what S²LOW holds without being asked; from config/connectors and the console."""
    found: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT id, entity_id, family, kind, settings FROM connector_instances "
                              "WHERE family IN ('tdt-actes', 'tdt-helios') AND kind = 's2low' AND entity_id <> ''")
    for row in rows:
        flow_id = json.loads(row["settings"]).get(INBOXES[row["family"]])
        if flow_id:
            found[(row["id"], row["entity_id"])] = (row["id"], row["entity_id"], row["family"], str(flow_id))
    for family in INBOXES:
        for inst in rt.instances.declared_of_family(family):
            flow_id = inst.settings.get(INBOXES[family])
            if inst.kind == "s2low" and inst.entity_id and flow_id and (inst.id, inst.entity_id) not in found:
                found[(inst.id, inst.entity_id)] = (inst.id, inst.entity_id, family, str(flow_id))
    return sorted(found.values())


async def poll_tdt_inboxes(rt: Any) -> dict[str, int]:
    """Fetch unread préfecture letters and PES_Retour of every configured collectivité as documents."""
    from flowbus.connectors.tdt.inbox import collect_pes_retours, collect_prefecture_letters
    counts = {"letters": 0, "pes_retours": 0, "failed": 0}
    for instance_id, entity_id, family, flow_id in await inboxes(rt):
        try:
            if family == "tdt-actes":  # a letter waits for the agent (an answer to attach): created as a draft
                counts["letters"] += len(await collect_prefecture_letters(
                    rt, instance_id=instance_id, entity_id=entity_id, flow_id=flow_id, start=False))
            else:
                counts["pes_retours"] += len(await collect_pes_retours(
                    rt, instance_id=instance_id, entity_id=entity_id, flow_id=flow_id, start=True))
        except (FlowbusError, OSError) as exc:
            counts["failed"] += 1
            log.warning("tdt.inbox_failed", instance=instance_id, entity=entity_id, flow=flow_id, error=str(exc))
    return counts


async def resend_overdue(rt: Any) -> int:
    """Steps whose check or retry message is overdue get it again (a message the broker kept or lost)."""
    return await rt.engine.resend_overdue()


async def send_digests(rt: Any) -> int:
    from flowbus import notifications
    return await notifications.install(rt).send_digests()


async def purge(rt: Any) -> dict[str, int]:
    """Remove what has expired: web sessions, signers' sessions, single-use links, old scheduled runs, the counters of
failed authentications past their window."""
    from flowbus.clock import isoformat
    from flowbus.people import limits, sessions
    from flowbus.scheduler import purge_runs
    now = rt.clock.now()
    async with rt.store.transaction() as tx:
        return {
            "web_sessions": await sessions.purge_expired(tx, now),
            "signer_sessions": await tx.execute("DELETE FROM parapheur_sessions WHERE expires_at <= $1",
                                                isoformat(now)),
            "links": await tx.execute("DELETE FROM user_links WHERE expires_at <= $1", isoformat(now)),
            "scheduled_runs": await purge_runs(tx, now),
            "auth_limits": await limits.purge(tx, now),
        }


def platform_jobs() -> list[Job]:
    from flowbus.notifications import DIGEST_HOUR
    return [
        Job("flows.follow", every(10), follow_flow_reloads, "Suivi des rechargements de flux", shared=False),
        Job("engine.overdue", every(60), resend_overdue, "Relance des vérifications en retard (message perdu)",
            describe=lambda n: f"{n} message(s) renvoyé(s)"),
        Job("tdt.inbox", every(INBOX_EVERY), poll_tdt_inboxes,
            "Relève des courriers de la préfecture et des PES Retour (S²LOW)",
            describe=lambda c: f"{c['letters']} courrier(s), {c['pes_retours']} PES Retour, "
                               f"{c['failed']} relève(s) en échec"),
        Job("notifications.digest", daily_at(DIGEST_HOUR), send_digests, "Résumés quotidiens des notifications",
            describe=lambda n: f"{n} résumé(s) envoyé(s)"),
        Job("purge", every(3600), purge, "Purge des sessions et liens expirés",
            describe=lambda c: f"{c['web_sessions']} session(s), {c['signer_sessions']} session(s) de signataire, "
                               f"{c['links']} lien(s), {c['scheduled_runs']} exécution(s) anciennes et "
                               f"{c['auth_limits']} compteur(s) d'échecs de connexion supprimés"),
    ]


__all__ = ["follow_flow_reloads", "inboxes", "platform_jobs", "poll_tdt_inboxes", "purge", "resend_overdue",
           "send_digests"]

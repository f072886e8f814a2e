"""Journal entries in French for people: an event label per kind and a sentence instead of a Python dict."""

from __future__ import annotations

from typing import Any

LABELS = {
    "document.created": "Document créé", "fields.changed": "Champs modifiés", "file.added": "Fichier ajouté",
    "state.changed": "Changement d'état", "admin.action": "Action sur le document",
    "step.done": "Étape terminée", "step.failed": "Échec d'une étape", "step.waiting": "Étape en attente",
    "step.rejected": "Refus", "step.skipped": "Étape passée", "step.deadline": "Délai dépassé",
    "step.crashed": "Erreur interne d'une étape", "step.finished": "Étape terminée",
    "entity.created": "Collectivité créée", "admin.entity.changed": "Collectivité modifiée",
    "admin.user.created": "Compte créé", "admin.user.updated": "Compte modifié",
    "admin.user.password_set": "Mot de passe défini", "admin.user.activated": "Compte réactivé",
    "admin.user.deactivated": "Compte désactivé", "admin.grant.given": "Droit donné",
    "admin.grant.revoked": "Droit retiré", "admin.key.created": "Clé d'API créée",
    "admin.key.revoked": "Clé d'API révoquée", "admin.connector.saved": "Connecteur enregistré",
    "admin.connector.deleted": "Connecteur supprimé", "admin.dead_letter.requeued": "Lettre morte remise en file",
    "admin.dead_letter.discarded": "Lettre morte supprimée", "admin.flow.enabled": "Flux activé",
    "admin.flow.disabled": "Flux désactivé",
    "user.signed_in": "Connexion", "user.locked": "Compte verrouillé",
    "signature.decision": "Décision de signature", "signature.sealed": "Cachet apposé",
    "signature.link": "Lien de signature", "parapheur.decision": "Décision dans le parapheur",
    "parapheur.folder_created": "Dossier déposé au parapheur",
    "mailsec.sent": "Courriel sécurisé envoyé", "mailsec.read": "Courriel sécurisé lu",
    "mailsec.download": "Pièce téléchargée", "mailsec.reply": "Réponse reçue", "mailsec.resent": "Lien renvoyé",
    "mailsec.locked": "Lien verrouillé", "archive.sealed": "Paquet d'archives scellé",
    "archive.stored": "Paquet archivé", "archive.downloaded": "Paquet d'archives téléchargé",
    "archive.package_built": "Paquet d'archives construit", "sae.archived": "Archivé", "sae.purged": "Purgé",
    "sae.transfer_sent": "Transfert au SAE", "ged.deposited": "Déposé en GED",
    "webhook.created": "Webhook créé", "webhook.deleted": "Webhook supprimé",
}
FIELD_LABELS = {"before": "avant", "after": "après", "name": "nom", "login": "identifiant", "role": "rôle",
                "flows": "flux", "entity": "collectivité", "active": "active", "siren": "SIREN",
                "parent": "collectivité mère", "method": "méthode", "from": "de", "to": "vers", "step": "étape",
                "error": "erreur", "comment": "commentaire", "queue": "file", "flow": "flux", "fields": "champs"}
ROLE_WORDS = {"reader": "lecteur", "editor": "agent", "admin": "administrateur"}


def label(kind: str) -> str:
    if kind in LABELS:
        return LABELS[kind]
    family = kind.split(".", 1)[0]
    return {"admin": "Action d'administration", "step": "Étape", "tdt": "Télétransmission",
            "mailsec": "Courriel sécurisé", "signature": "Signature", "archive": "Archivage",
            "user": "Compte"}.get(family, kind)


def _value(v: Any, names: dict[str, str] | None = None) -> str:
    if isinstance(v, str) and names and v in names:
        return names[v]
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "oui" if v else "non"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{FIELD_LABELS.get(k, k)} : {_value(x, names)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return ", ".join(_value(x, names) for x in v) or "—"
    return ROLE_WORDS.get(str(v), str(v))


def sentence(data: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """The entry's data as « clé : valeur ; … » with French names; ``names`` turns entity ids into names."""
    return " ; ".join(f"{FIELD_LABELS.get(k, k)} : {_value(v, names)}" for k, v in data.items())


def actor(text: str) -> str:
    kind, _, who = text.partition(":")
    return {"user": f"{who}", "api-key": f"clé d'API {who}", "engine": "moteur", "signataire": f"signataire {who}",
            "archiviste": f"archiviste {who}"}.get(kind, text)


STATE_WORDS = {"draft": "Brouillon", "running": "En cours", "waiting": "En attente", "error": "En erreur",
               "done": "Terminé", "cancelled": "Annulé", "rejected": "Refusé"}
ACTION_WORDS = {"start": "Envoi du document", "retry": "Relance de l'étape", "skip": "Étape passée",
                "cancel": "Annulation du document", "resume": "Reprise"}


def document_sentence(kind: str, data: dict[str, Any], flow: Any) -> str:
    """A document's journal entry as a French sentence, with the flow's labels for fields, steps and states."""
    from flowbus.web.french import size

    def field(name: str) -> str:
        return flow.field(name).label if flow is not None and flow.has_field(name) else name

    def step(step_id: Any) -> str:
        return flow.step(step_id).label if flow is not None and step_id and flow.has_step(step_id) else str(step_id)

    def state(name: Any) -> str:
        if flow is not None and name:
            return flow.state_label(name)
        return STATE_WORDS.get(str(name), str(name))

    if kind == "document.created":
        return f"Dans le flux « {flow.label if flow else data.get('flow', '')} »."
    if kind == "fields.changed":
        return "Champs : " + ", ".join(field(n) for n in data.get("fields", [])) + "."
    if kind == "file.added":
        parts = [f"« {data.get('filename')} » ({field(str(data.get('field')))})"]
        if isinstance(data.get("size"), int):
            parts.append(size(data["size"]))
        if isinstance(data.get("pages"), int):
            parts.append(f"{data['pages']} page{'s' if data['pages'] > 1 else ''}")
        return ", ".join(parts) + "."
    if kind == "state.changed":
        text = f"De « {state(data.get('from'))} » à « {state(data.get('to'))} »"
        if data.get("step"):
            text += f", à l'étape « {step(data['step'])} »"
        if data.get("reason"):
            text += f" : {data['reason']}"
        return text + "."
    if kind == "admin.action":
        text = ACTION_WORDS.get(str(data.get("action")), str(data.get("action")))
        if data.get("step") and data.get("action") != "start":
            text += f" (étape « {step(data['step'])} »)"
        if data.get("comment"):
            text += f" : {data['comment']}"
        return text + "."
    if kind.startswith("step.") and "step" in data:
        text = f"« {step(data['step'])} »"
        message = data.get("message") or data.get("error") or data.get("reason")
        return text + (f" : {message}" if message and message != "—" else "") + "."
    return sentence(data)

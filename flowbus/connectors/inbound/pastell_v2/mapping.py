"""Pastell ↔ flowbus vocabulary: flux ↔ flow, Pastell field names ↔ our fields, actions and states.

Pastell's French field names stay here and nowhere else.  A Pastell field maps to the first
candidate name the target flow declares (``FluxMap.fields``), so the mapping survives a flow
renaming ``acte`` to ``acte_pdf``; a Pastell field the flow does not declare under any candidate
and that has no meaning for us (``envoi_*`` path checkboxes, ``iparapheur_type``…) is accepted and
ignored, as Pastell ignores what a flux does not use.

States: Pastell's ``last_action`` is an action name (``creation``, ``send-iparapheur``,
``acquiter-tdt``…, ``accepter-sae``).  Ours is a state plus the current step; ``last_action_for``
derives the Pastell name from the step's connector family — for a step under way, its sending
action; once a step is over, the state Pastell's flux records at its end (``FAMILY_DONE``), so a
document archived after its acknowledgement ends on ``accepter-sae``, not ``acquiter-tdt``.  The
steps already done are read from the engine's bookkeeping (``laststate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowbus.errors import NotFound, ValidationError

# Pastell actions that, on a draft, start our flow (the app's first "send" click); on a document
# already under way they are accepted as no-ops (our flows chain their steps on their own); on a
# document in error they retry the failed step.
TRIGGER_ACTIONS = frozenset({
    "orientation", "importation", "send-iparapheur", "send-signature", "send-signature-local", "send-tdt",
    "send-tdt-helios", "send-ged", "send-archive", "send-mailsec", "envoi", "teletransmission-tdt",
    "verif-iparapheur", "verif-tdt", "verif-sae", "validation-sae",
})
DELETE_ACTIONS = frozenset({"supression", "suppression", "delete"})
NOOP_ACTIONS = frozenset({"modification", "envoi-signature-change", "envoi-sae-change", "envoi-signature-api-change",
                          "arrete-change", "autre_document_attache-change", "fichier_pes_change"})

# step family → Pastell last_action while the step runs / when it refuses / when it fails
FAMILY_RUNNING = {"signature": "send-iparapheur", "tdt-actes": "send-tdt", "tdt-helios": "send-tdt",
                  "ged": "send-ged", "sae": "send-archive", "mailsec": "send-mailsec", "notify": "orientation"}
FAMILY_REJECTED = {"signature": "rejet-iparapheur", "tdt-actes": "erreur-verif-tdt", "tdt-helios": "refus-tdt",
                   "sae": "rejet-sae", "mailsec": "non-recu"}
FAMILY_ERROR = {"signature": "erreur-verif-iparapheur", "tdt-actes": "send-tdt-erreur", "tdt-helios": "tdt-error",
                "ged": "erreur-ged", "sae": "erreur-envoie-sae", "mailsec": "erreur-mailsec"}
# step family → the state Pastell's flux records when that step ends well
FAMILY_DONE = {"signature": "recu-iparapheur", "tdt-actes": "acquiter-tdt", "tdt-helios": "acquiter-tdt",
               "ged": "send-ged", "sae": "accepter-sae", "mailsec": "reception"}
STATE_LABELS = {"creation": "Créé", "modification": "En cours de rédaction", "send-iparapheur": "Transmis au parapheur",
                "send-tdt": "Transmis au TdT", "send-ged": "Versé à la GED", "send-archive": "Versé au SAE",
                "send-mailsec": "Envoyé par mail sécurisé", "orientation": "Orientation",
                "acquiter-tdt": "Acquitté par la préfecture", "termine": "Traitement terminé",
                "recu-iparapheur": "Signature récupérée", "accepter-sae": "Archive acceptée par le SAE",
                "rejet-iparapheur": "Signature refusée", "erreur-verif-tdt": "Erreur lors de la vérification du TdT",
                "refus-tdt": "Refusé par la trésorerie", "rejet-sae": "Archive rejetée", "non-recu": "Non reçu",
                "erreur-verif-iparapheur": "Erreur lors de la vérification du parapheur",
                "send-tdt-erreur": "Erreur lors de l'envoi au TdT", "tdt-error": "Erreur sur le TdT",
                "erreur-ged": "Erreur lors du dépôt en GED", "erreur-envoie-sae": "Erreur lors de l'envoi au SAE",
                "erreur-mailsec": "Erreur lors de l'envoi du mail sécurisé", "fatal-error": "Erreur fatale",
                "supression": "Supprimé", "reception": "Reçu"}


@dataclass(frozen=True)
class FluxMap:
    """One Pastell flux: the flow it runs on and its field names (Pastell name → candidate names of ours)."""

    flux: str
    label: str
    flows: tuple[str, ...]  # candidate flow ids, the first one loaded is used
    title_field: str  # Pastell field giving the document title
    fields: dict[str, tuple[str, ...]]
    ignored: frozenset[str] = frozenset()  # Pastell fields without meaning for our flows
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # Pastell value → ours, per Pastell field


_PATH_FLAGS = frozenset({"envoi_signature_check", "envoi_signature", "envoi_signature_fast", "envoi_tdt", "envoi_ged",
                         "envoi_ged_1", "envoi_ged_2", "envoi_sae", "envoi_mailsec", "envoi_iparapheur",
                         "iparapheur_type", "iparapheur_sous_type", "fast_parapheur_circuit", "has_signature_locale",
                         "document_papier", "type_acte", "type_pj", "envoi_auto", "json_metadata", "mail_metadata",
                         "sae_config", "has_information_complementaire", "is_pades"})

FLUX: dict[str, FluxMap] = {m.flux: m for m in [
    # config/flows/deliberation.yml stores Pastell's own nature codes ("1".."6") and file names
    FluxMap(
        "actes-generique", "Actes (générique)", ("deliberation",), "objet",
        {"acte_nature": ("nature",),
         "numero_de_lacte": ("numero_acte",),
         "objet": ("objet",),
         "date_de_lacte": ("date_decision",),
         "classification": ("classification",),
         "document_papier": ("document_papier",),
         "arrete": ("arrete",),
         "autre_document_attache": ("annexes",),
         "envoi_signature": ("envoi_signature",),
         "envoi_signature_check": ("envoi_signature",),
         "envoi_iparapheur": ("envoi_signature",),
         "envoi_tdt": ("envoi_tdt",),
         "envoi_sae": ("envoi_sae",),
         "aractes": ("aractes",),
         "bordereau": ("bordereau_acquittement",),
         "bordereau_signature": ("bordereau_signature",),
         "document_signe": ("arrete",),  # PAdES: the signed act replaces the act
         "acte_tamponne": ("arrete",)},
        _PATH_FLAGS),
    FluxMap(
        "helios-generique", "Helios (générique)", ("pes",), "objet",
        {"objet": ("objet",),
         "fichier_pes": ("pes_aller",),
         "visuel_pdf": ("visuel_pdf",),
         "envoi_signature": ("envoi_signature",),
         "envoi_signature_check": ("envoi_signature",),
         "envoi_tdt": ("envoi_tdt",),
         "envoi_sae": ("envoi_sae",),
         "fichier_reponse": ("pes_acquit",),
         "bordereau_signature": ("bordereau_signature",),
         "fichier_pes_signe": ("pes_aller",)},  # XAdES: the signed PES replaces the PES
        _PATH_FLAGS),
    FluxMap(
        "pdf-generique", "Document PDF (générique)", ("pdf-generique", "document", "demo"), "libelle",
        {"libelle": ("libelle", "objet", "title"),
         "document": ("document", "fichier", "file"),
         "annexe": ("annexes", "annexe")},
        _PATH_FLAGS),
    FluxMap(
        "mailsec", "Mail sécurisé", ("mailsec",), "objet",
        {"objet": ("objet", "subject", "title"), "message": ("message", "body"),
         "to": ("destinataires", "to"), "cc": ("cc",), "bcc": ("bcc",),
         "document_attache": ("pieces_jointes", "documents", "document_attache")},
        _PATH_FLAGS),
]}


def _flow_field_names(flow: Any) -> dict[str, Any]:
    return {f.name: f for f in getattr(flow, "fields", ())}


@dataclass(frozen=True)
class ResolvedFlux:
    """A FluxMap bound to a loaded flow: exact Pastell ↔ ours names."""

    map: FluxMap
    flow: Any
    to_ours: dict[str, str]  # Pastell → ours
    to_pastell: dict[str, str]  # ours → Pastell

    @property
    def flux(self) -> str:
        return self.map.flux

    def field_type(self, ours: str) -> str:
        f = _flow_field_names(self.flow).get(ours)
        return getattr(f, "type", "text") if f is not None else "text"

    def is_file(self, ours: str) -> bool:
        return self.field_type(ours) in ("file", "files")

    def our_field(self, pastell: str) -> str | None:
        """Our field for a Pastell field; None for an ignorable Pastell field; ValidationError if unknown."""
        if pastell in self.to_ours:
            return self.to_ours[pastell]
        if pastell in self.map.ignored or pastell in self.map.fields:
            return None
        raise ValidationError(f"Le champ « {pastell} » n'existe pas dans le flux {self.flux}", field=pastell)

    def value_in(self, pastell: str, value: Any) -> Any:
        """A Pastell form value (always a string) → our field's value."""
        ours = self.to_ours[pastell]
        table = self.map.values.get(pastell)
        if table and isinstance(value, str) and value in table:
            value = table[value]
        kind = self.field_type(ours)
        if kind in ("boolean", "bool", "checkbox") and isinstance(value, str):
            return value.strip().lower() in ("1", "true", "on", "oui", "yes")
        if kind in ("integer", "int", "number") and isinstance(value, str) and value.strip():
            try:
                return int(value) if kind != "number" else float(value)
            except ValueError:
                raise ValidationError(f"Le champ « {pastell} » doit être un nombre", field=pastell) from None
        if kind == "date" and isinstance(value, str) and "/" in value:  # Pastell UI dates: dd/mm/yyyy
            d, m, y = (value.split("/") + ["", "", ""])[:3]
            if len(y) == 4:
                return f"{y}-{m.zfill(2)}-{d.zfill(2)}"
        return value

    def value_out(self, ours: str, value: Any) -> Any:
        pastell = self.to_pastell.get(ours, ours)
        table = self.map.values.get(pastell)
        if table and isinstance(value, str):
            reverse = {v: k for k, v in table.items()}
            value = reverse.get(value, value)
        if isinstance(value, bool):
            return "1" if value else ""
        return value


def resolve(flux: str, flows: dict[str, Any]) -> ResolvedFlux:
    m = FLUX.get(flux)
    if m is None:
        raise NotFound(f"Le type de flux « {flux} » n'existe pas", field="type")
    flow = next((flows[f] for f in m.flows if f in flows), None)
    if flow is None:
        raise NotFound(f"Le flux « {flux} » n'est pas disponible sur cette plateforme "
                       f"(flux flowbus attendu : {', '.join(m.flows)})", field="type")
    ours = _flow_field_names(flow)
    to_ours: dict[str, str] = {}
    for pastell, candidates in m.fields.items():
        hit = next((c for c in candidates if c in ours), None)
        if hit is not None:
            to_ours[pastell] = hit
    for name in ours:  # a flow field with no Pastell counterpart keeps its own name
        if name not in to_ours.values() and name not in to_ours:
            to_ours[name] = name
    to_pastell: dict[str, str] = {}
    for pastell, ours_name in to_ours.items():
        to_pastell.setdefault(ours_name, pastell)
    return ResolvedFlux(m, flow, to_ours, to_pastell)


def available_flux(flows: dict[str, Any]) -> list[ResolvedFlux]:
    out = []
    for name in FLUX:
        try:
            out.append(resolve(name, flows))
        except NotFound:
            continue
    return out


def flux_for_flow(flow_id: str, flows: dict[str, Any]) -> ResolvedFlux | None:
    for m in FLUX.values():
        if flow_id in m.flows and flow_id in flows:
            resolved = resolve(m.flux, flows)
            if resolved.flow.id == flow_id:
                return resolved
    return None


def _step_family(flow: Any, step_id: str | None) -> str | None:
    if not step_id:
        return None
    for step in getattr(flow, "steps", ()):
        if step.id == step_id:
            return getattr(step, "family", None)
    return None


def first_trigger(flux: ResolvedFlux) -> str:
    steps = list(getattr(flux.flow, "steps", ()))
    if not steps:
        return "orientation"
    return FAMILY_RUNNING.get(getattr(steps[0], "family", ""), "orientation")


def pastell_steps(flow: Any) -> list[str]:
    """The flow's steps that Pastell's flux know (a signature, TdT, GED, SAE or mail step), in flow order."""
    return [s.id for s in getattr(flow, "steps", ()) if getattr(s, "family", None) in FAMILY_DONE]


def last_action_for(flux: ResolvedFlux, doc: Any, last_done: str | None = None) -> str:
    """Pastell's ``last_action.action`` for a document; ``last_done``: its last step done that Pastell knows
    (``laststate.last_done``), None when none is."""
    family = _step_family(flux.flow, doc.step)
    after = FAMILY_DONE.get(_step_family(flux.flow, last_done) or "")
    if doc.state == "draft":
        return "creation" if doc.version <= 1 else "modification"
    if doc.state in ("running", "waiting"):
        if family in FAMILY_RUNNING and family != "notify":
            return FAMILY_RUNNING[family]
        return after or "orientation"  # a step of ours (publication…): Pastell still shows the last one it knows
    if doc.state == "done":
        return after or "termine"
    if doc.state == "error":
        return FAMILY_ERROR.get(family or "", "fatal-error")
    if doc.state == "cancelled":
        return "supression"
    return FAMILY_REJECTED.get(family or "", doc.state)  # a named refusal state of the flow


def actions_possible(flux: ResolvedFlux, doc: Any) -> list[str]:
    if doc.state == "draft":
        return ["modification", first_trigger(flux), "supression"]
    if doc.state == "error":
        return [FAMILY_RUNNING.get(_step_family(flux.flow, doc.step) or "", "orientation"), "supression"]
    if doc.state in ("running", "waiting"):
        return ["supression"]
    return []


def state_label(action: str) -> str:
    return STATE_LABELS.get(action, action)


def native(flow: Any) -> ResolvedFlux:
    """A flowbus flow offered as a Pastell flux under its own id and field names."""
    names = list(_flow_field_names(flow))
    title = next((n for n in ("objet", "title", "titre", "libelle") if n in names), names[0] if names else "")
    m = FluxMap(flow.id, getattr(flow, "label", flow.id) or flow.id, (flow.id,), title, {}, frozenset())
    identity = {n: n for n in names}
    return ResolvedFlux(m, flow, identity, dict(identity))


def resolve_any(flux: str, flows: dict[str, Any]) -> ResolvedFlux:
    """A Pastell flux name, or one of our flow ids used directly."""
    if flux in FLUX:
        return resolve(flux, flows)
    if flux in flows:
        return native(flows[flux])
    raise NotFound(f"Le type de flux « {flux} » n'existe pas", field="type")


def for_document(flow_id: str, flows: dict[str, Any]) -> ResolvedFlux:
    return flux_for_flow(flow_id, flows) or native(flows[flow_id])

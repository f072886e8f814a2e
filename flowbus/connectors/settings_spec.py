"""What each connector kind can be configured with: its settings, labelled in French, typed, required or not, secret or not.

The console builds its forms from these declarations; saving an instance checks them
(``check``), so a missing URL or a port that is not a number is refused at the field, in French.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowbus.errors import ValidationError


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    type: str = "text"  # text, url, password, integer, boolean, path, choice
    required: bool = False
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()

    @property
    def secret(self) -> bool:
        return self.type == "password"


_SMTP = (
    Setting("host", "Serveur SMTP", required=True, help="nom ou adresse du serveur d'envoi"),
    Setting("port", "Port", "integer", help="25, 587 (STARTTLS) ou 465 (TLS implicite)"),
    Setting("username", "Identifiant SMTP"),
    Setting("password", "Mot de passe SMTP", "password"),
    Setting("starttls", "STARTTLS", "choice", choices=(("", "si le serveur le propose"), ("true", "toujours"),
                                                        ("false", "jamais"))),
    Setting("use_tls", "TLS implicite (port 465)", "boolean"),
    Setting("from_address", "Adresse d'expédition", required=True),
    Setting("from_name", "Nom de l'expéditeur"),
)
_SEDA = (  # the archives service's identifiers for this collectivité (flowbus.archive.profile: they override the profile)
    Setting("archival_agency", "Service d'archives (identifiant)", help="donné par le service d'archives"),
    Setting("originating_agency", "Service producteur (identifiant)", help="par défaut : le SIREN de la collectivité"),
    Setting("archival_agreement", "Accord de versement"),
    Setting("archival_profile", "Profil d'archives"),
)
_S2LOW = (
    Setting("url", "Adresse de S²LOW", "url", required=True, help="par exemple https://s2low.example.fr"),
    Setting("login", "Identifiant"),
    Setting("password", "Mot de passe", "password"),
    Setting("client_cert_path", "Certificat client (fichier .p12 ou PEM sur le serveur)", "path"),
    Setting("client_cert_p12_base64", "Certificat client PKCS#12 (base64)", "password"),
    Setting("client_cert_password", "Mot de passe du certificat client", "password"),
    Setting("verify_tls", "Vérifier le certificat du serveur", "boolean"),
    Setting("ca_path", "Autorité de certification du serveur S²LOW (fichier PEM sur le serveur)", "path",
            help="vide : les autorités reconnues par le système"),
    Setting("auth_method", "Authentification", "choice",
            choices=(("", "certificat, plus identifiant et mot de passe HTTP s'ils sont remplis"),
                     ("nounce", "certificat, plus un nonce à usage unique par requête (mot de passe jamais envoyé "
                                "tel quel après la demande de nonce)"))),
)

SPECS: dict[tuple[str, str], tuple[Setting, ...]] = {
    ("tdt-actes", "s2low"): _S2LOW + (Setting("envoi_en_attente", "Confirmation par un agent (RGS**)", "boolean",
                                              help="les actes sont déposés « en attente » ; un agent les confirme sur "
                                                   "S²LOW avec son certificat RGS** depuis la page du document"),
                                      Setting("forward_x509_certificate", "Certificat RGS** de l'agent à transmettre "
                                              "(PEM)", help="envoyé dans l'en-tête "
                                                            "org.s2low.forward-x509-identification"),
                                      Setting("departement", "Département (code)", help="par exemple 034"),
                                      Setting("siren", "SIREN de la collectivité émettrice"),
                                      Setting("letters_flow", "Flux des courriers de la préfecture",
                                              help="relevés tous les quarts d'heure, par exemple courrier-prefecture "
                                                   "(vide : pas de relève)")),
    ("tdt-helios", "s2low"): _S2LOW + (Setting("retours_flow", "Flux des PES Retour",
                                               help="relevés tous les quarts d'heure, par exemple pes-retour "
                                                    "(vide : pas de relève)"),),
    ("mailsec", "smtp"): _SMTP + (Setting("public_base_url", "Adresse publique des liens", "url"),),
    ("notify", "smtp"): _SMTP,
    ("notify", "http"): (Setting("url", "Adresse à prévenir", "url", required=True),
                         Setting("secret", "Secret de signature", "password"),
                         Setting("timeout", "Délai d'attente (s)", "integer")),
    ("signature", "iparapheur"): (
        Setting("url", "Adresse d'i-Parapheur", "url", required=True),
        Setting("username", "Identifiant", required=True), Setting("password", "Mot de passe", "password", True),
        Setting("tenant_id", "Entité i-Parapheur (tenant)", required=True),
        Setting("desk_id", "Bureau émetteur", required=True),
        Setting("verify_tls", "Vérifier le certificat du serveur", "boolean")),
    ("signature", "seal"): (
        Setting("p12_path", "Cachet : fichier PKCS#12 sur le serveur", "path"),
        Setting("p12_base64", "Cachet : PKCS#12 (base64)", "password"),
        Setting("p12_password", "Mot de passe du cachet", "password"),
        Setting("tsa_url", "Autorité d'horodatage", "url")),
    ("signature", "local"): (
        Setting("seal_p12_path", "Cachet : fichier PKCS#12 sur le serveur", "path"),
        Setting("seal_p12_base64", "Cachet : PKCS#12 (base64)", "password"),
        Setting("seal_password", "Mot de passe du cachet", "password"),
        Setting("circuit", "Circuit par défaut")),
    ("ged", "filesystem"): (Setting("directory", "Répertoire de dépôt", "path", required=True),),
    ("ged", "webdav"): (Setting("url", "Adresse WebDAV", "url", required=True), Setting("username", "Identifiant"),
                        Setting("password", "Mot de passe", "password")),
    ("ged", "s3"): (Setting("endpoint", "Serveur S3 (hôte:port)", required=True),
                    Setting("access_key", "Clé d'accès", required=True),
                    Setting("secret_key", "Clé secrète", "password", True), Setting("bucket", "Compartiment", required=True),
                    Setting("prefix", "Préfixe"), Setting("region", "Région"), Setting("secure", "HTTPS", "boolean")),
    ("sae", "asalae"): (Setting("url", "Adresse d'As@lae", "url", required=True), Setting("login", "Identifiant"),
                        Setting("password", "Mot de passe", "password"),
                        Setting("seal_p12_path", "Cachet : fichier PKCS#12", "path"),
                        Setting("seal_p12_password", "Mot de passe du cachet", "password"),
                        Setting("tsa_url", "Autorité d'horodatage", "url")) + _SEDA,
    ("sae", "store"): (Setting("seal_p12_path", "Cachet : fichier PKCS#12", "path"),
                       Setting("seal_p12_password", "Mot de passe du cachet", "password"),
                       Setting("tsa_url", "Autorité d'horodatage", "url"),
                       Setting("package_format", "Format des paquets", "choice", choices=(("zip", "ZIP"),
                                                                                            ("tar", "TAR")))) + _SEDA,
}


def spec_for(family: str, kind: str) -> tuple[Setting, ...]:
    return SPECS.get((family, kind), ())


def check(family: str, kind: str, settings: dict[str, Any], *, keep_secrets: frozenset[str] = frozenset()) -> dict:
    """``settings`` normalised (integers, booleans), or ValidationError naming the first wrong field.

    ``keep_secrets``: secrets already stored that an empty form field leaves as they are.
    """
    out = dict(settings)
    for s in spec_for(family, kind):
        value = out.get(s.name)
        empty = value is None or (isinstance(value, str) and not value.strip())
        if empty:
            out.pop(s.name, None)
            if s.required and not (s.secret and s.name in keep_secrets):
                raise ValidationError(f"« {s.label} » est obligatoire.", field=s.name)
            continue
        if s.type == "integer":
            try:
                out[s.name] = int(str(value).strip())
            except ValueError:
                raise ValidationError(f"« {s.label} » doit être un nombre entier.", field=s.name) from None
        elif s.type == "boolean":
            out[s.name] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "on", "oui")
        elif s.type == "url":
            if not str(value).startswith(("http://", "https://")):
                raise ValidationError(f"« {s.label} » doit commencer par https:// (ou http://).", field=s.name)
            out[s.name] = str(value).strip()
        elif s.type == "choice" and s.choices and str(value) not in {c for c, _ in s.choices}:
            raise ValidationError(f"« {s.label} » : valeur « {value} » inconnue.", field=s.name)
    return out

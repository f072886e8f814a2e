"""S²LOW simulator: the same endpoints, answers and status progression as a real S²LOW (tdt.md §3).

It validates what it receives as S²LOW does (numbers unique per authority, typology codes of
the classification, decision date not in the future, PDF act; PES encoding, NomFic, CodCol…),
builds the real ACTES archive (enveloppe, message, files named by the rules) and answers with
real préfecture messages (ARActe, AnomalieActe, ARAnnulation, courriers, PES_ACQUIT) built by
``actes_messages``/``helios``.  Time comes from an injected clock, so a test moves a
transmission from « posté » to « acquittement reçu » with ``clock.advance``.

Scripting: ``delays`` per transition, ``fail={"post_acte": 500}`` (every call) or
``{"post_acte": [500, 500]}`` (the next calls), ``down = True`` (HTTP 503 everywhere),
``outcome="ar" | "anomaly" | "refused"`` (default and per act number with ``script_acte``),
``pes_outcome="ok" | "errors" | "nack"``.  ``count(endpoint, key)`` counts calls per endpoint
and per act number / PES NomFic.  One module (~950 lines): the endpoints share one state and
splitting them would scatter it.

Authentication as S²LOW does it (tdt.md §3.1): over TLS (``tls_context``: a server certificate, the
client certificate required) the account is found by the client certificate; HTTP Basic chooses
among several accounts sharing it; ``/api/get-nounce.php`` gives a single-use nonce, then any URL
with ``nounce``, ``login`` and ``hash = sha256(password:nounce)``.  ``require_rgs``: a transmission
needs an RGS** connection (the client certificate, or the one forwarded in the
``org.s2low.forward-x509-identification`` header, is in ``rgs_certificates``), otherwise it is
posted ``en_attente`` (17) and an agent confirms it at ``actes_transac_post_confirm_api.php``.

Run it alone: ``python -m flowbus.connectors.tdt.s2low_sim --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import ssl
from urllib.parse import quote
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from flowbus.clock import Clock, SystemClock
from flowbus.connectors.tdt import actes as A
from flowbus.connectors.tdt import actes_messages as M
from flowbus.connectors.tdt.classification import Classification, build_classification, sample_classification
from flowbus.connectors.tdt.helios import build_pes_acquit, pes_errors
from flowbus.connectors.tdt.s2low import ACTES_STATUS
from flowbus.connectors.tdt.s2low import HELIOS_STATUS as HELIOS_LABELS
from flowbus.errors import ValidationError

LETTER_STATUS = {2: 21, 3: 7, 4: 7, 5: 21}  # type of a préfecture letter → its status on arrival
# what S²LOW does with an acknowledged act after the AR, per scripted outcome (each step after delays["archive"])
AFTER_AR = {"ar": (), "archived": (19, 12, 13), "archive_error": (19, 20), "destroyed": (16,)}
ACKNOWLEDGED = frozenset({4, 5, 12, 13, 14, 19, 20, 22})  # states in which the bordereau and files are served
# PES: what follows the acquit, per scripted outcome (each step after delays["archive"])
PES_AFTER_ACQUIT = {"ok": (), "archived": (9, 10), "sae_refused": (9, 11), "destroyed": (22,)}
PES_WITH_ACQUIT = frozenset({4, 8, 9, 10, 11, 19, 20})


FORWARD_HEADER = "org.s2low.forward-x509-identification"
NONCE_LIFETIME = timedelta(minutes=5)  # S²LOW's NounceSQL::menage
CERT_ONLY = frozenset({"/admin/users/api-list-login.php"})  # answered on the certificate alone


@dataclass
class Account:
    """A S²LOW user: found by the DER of its client ``certificate`` (None: any client, Basic required)."""

    login: str
    password: str = ""
    certificate: bytes | None = None
    name: str = ""
    email: str = ""
    id: int = 0


def tls_context(server_pem: str, client_ca: str, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """The simulator's TLS: ``server_pem`` (certificate + key), client certificates checked against ``client_ca``.

    ``require_client_cert``: the handshake itself refuses a client without a certificate (Apache
    ``SSLVerifyClient require``); otherwise the simulator answers as S²LOW does without one.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    ctx.load_cert_chain(server_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    return obj.getpeercert(binary_form=True) if obj is not None else None


@dataclass
class Transaction:
    id: int
    type: int  # 1 transmission, 2 courrier simple, 3 demande PC, 4 lettre obs., 5 déféré, 6 annulation, 7 classif.
    posted_at: datetime
    number: str = ""
    acte: A.Acte | None = None
    archive: A.Archive | None = None
    related: int | None = None
    timeline: list[tuple[datetime, int, bytes]] = field(default_factory=list)  # (from, status, flux_retour)
    unread: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    letter_date: date | None = None
    confirmed_by: str | None = None

    def status_at(self, now: datetime) -> tuple[int, bytes]:
        current = (1, b"")
        for at, status, payload in self.timeline:
            if at <= now:
                current = (status, payload)
        return current


@dataclass
class PesTransaction:
    id: int
    nom_fic: str
    filename: str
    sha1: str
    content: bytes
    timeline: list[tuple[datetime, int, str]] = field(default_factory=list)
    acquit: bytes | None = None

    def status_at(self, now: datetime) -> tuple[int, str]:
        current = (1, "Posté")
        for at, status, message in self.timeline:
            if at <= now:
                current = (status, message)
        return current


class S2lowSimulator:
    """An in-process S²LOW.  ``await sim.start()`` returns its base URL (127.0.0.1, free port)."""

    def __init__(self, *, clock: Clock | None = None, delays: dict[str, timedelta] | None = None,
                 fail: dict[str, int | list[int]] | None = None, outcome: str = "ar",
                 anomaly: tuple[str, str] = ("002", "ODT-VERIF-01 : Votre acte a été transmis avec une date "
                                             "de classification qui n'est pas à jour"),
                 refusal_reason: str = "Acte refusé par la préfecture : pièce illisible",
                 pes_outcome: str = "ok", classification: Classification | None | bool = None,
                 login: str | None = None, password: str | None = None,
                 siren: str = "123456789", departement: str = "034", ssl_context: Any = None,
                 accounts: list[Account] | None = None, require_rgs: bool = False,
                 rgs_certificates: set[bytes] | None = None, authority_name: str = "Commune de Test") -> None:
        self.clock = clock or SystemClock()
        self.delays = {"validate": timedelta(0), "transmit": timedelta(0), "ar": timedelta(0),
                       "pes_transmit": timedelta(0), "pes_acquit": timedelta(0), "archive": timedelta(0),
                       **(delays or {})}
        self.fail: dict[str, int | list[int]] = dict(fail or {})
        self.outcome = outcome
        self.anomaly = anomaly
        self.refusal_reason = refusal_reason
        self.pes_outcome = pes_outcome
        # classification=False: S²LOW has none yet (it is requested with actes_classification_request)
        self.classification: Classification | None = (None if classification is False
                                                      else classification or sample_classification())
        self.login, self.password = login, password
        # accounts: login/password alone is one account without a certificate (Basic always required)
        self.accounts: list[Account] = list(accounts or ([Account(login, password or "")] if login else []))
        for i, account in enumerate(self.accounts, start=1):
            account.id = account.id or i
        self.nonces: dict[str, tuple[str, str, datetime]] = {}  # nonce → (login, sha256(password:nonce), created)
        self.require_rgs = require_rgs
        self.rgs_certificates: set[bytes] = set(rgs_certificates or ())
        self.auth_used: Counter[tuple[str, str]] = Counter()  # (certificate | basic | nounce, login) per request
        self.authority_name = authority_name
        self.status_labels = dict(ACTES_STATUS)  # actes_status.php (a test may add a status of a newer S²LOW)
        self.emetteur = A.Emetteur(siren=siren, departement=departement, nature="02",
                                   adresses_retour=("actes@s2low.test",))
        self.ssl_context = ssl_context
        self.down = False
        self.calls: Counter[tuple[str, str | None]] = Counter()  # answered calls per (endpoint, key)
        self.failures: Counter[str] = Counter()  # calls answered by a scripted failure or ``down``
        self.transactions: dict[int, Transaction] = {}
        self.pes: dict[int, PesTransaction] = {}
        self.pes_retours: dict[int, tuple[str, bytes, bool]] = {}  # id → (name, xml, read)
        self.scripts: dict[str, tuple[str, str | None]] = {}
        self.pes_scripts: dict[str, str] = {}
        self._serials: Counter[str] = Counter()
        self._next = 0
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._build_app()

    # ---- scripting and counters --------------------------------------------------------------

    def script_acte(self, number: str, outcome: str, reason: str | None = None) -> None:
        """Outcome for one act: ``ar``, ``anomaly`` or ``refused`` (with the préfecture's reason), or an AR followed
        by S²LOW's own archiving: ``archived`` (19, 12, 13), ``archive_error`` (19, 20), ``destroyed`` (16)."""
        self.scripts[number] = (outcome, reason)

    def script_pes(self, nom_fic: str, outcome: str) -> None:
        """Outcome for one PES: ``ok``, ``nack``, ``errors``, ``cancelled`` (0), or the acquit followed by S²LOW's
        archiving: ``archived`` (9, 10), ``sae_refused`` (9, 11), ``destroyed`` (22)."""
        self.pes_scripts[nom_fic] = outcome

    def count(self, endpoint: str, key: str | None = None) -> int:
        if key is None:
            return sum(n for (ep, _), n in self.calls.items() if ep == endpoint)
        return self.calls[(endpoint, key)]

    def transmissions(self, number: str) -> int:
        """How many transactions were created for act ``number`` (must stay ≤ 1)."""
        return sum(1 for t in self.transactions.values() if t.type == 1 and t.number == number)

    def _id(self) -> int:
        self._next += 1
        return self._next

    def _now(self) -> datetime:
        return self.clock.now()

    # ---- server ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> S2lowSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate], client_max_size=200 * 1024 * 1024)
        routes = [
            ("GET", "/api/test-connexion.php", "test_connexion", self.h_test),
            ("GET", "/api/get-nounce.php", "get_nounce", self.h_nounce),
            ("GET", "/api/info-connexion.php", "info_connexion", self.h_info),
            ("GET", "/api/test-rgs.php", "test_rgs", self.h_test_rgs),
            ("GET", "/admin/users/api-list-login.php", "list_login", self.h_list_login),
            ("GET", "/modules/actes/actes_transac_get_tampon.php", "get_tampon", self.h_tampon),
            ("GET", "/modules/actes/api/actes_status.php", "actes_status", self.h_actes_status),
            ("GET", "/modules/actes/api/number_actes.php", "number_actes", self.h_number_actes),
            ("GET", "/modules/actes/actes_transac_post_confirm_api.php", "post_confirm", self.h_post_confirm),
            ("POST", "/modules/actes/actes_transac_create.php", "post_acte", self.h_post_acte),
            ("GET", "/modules/actes/actes_transac_get_status.php", "get_status", self.h_status),
            ("POST", "/modules/actes/actes_transac_cancel.php", "cancel", self.h_cancel),
            ("GET", "/modules/actes/actes_classification_fetch.php", "classification", self.h_classification),
            ("GET", "/modules/actes/actes_classification_request.php", "classification_request", self.h_classif_req),
            ("GET", "/modules/actes/api/list_actes.php", "list_actes", self.h_list_actes),
            ("GET", "/modules/actes/actes_create_pdf.php", "bordereau", self.h_bordereau),
            ("GET", "/modules/actes/actes_transac_get_files_list.php", "files_list", self.h_files),
            ("GET", "/modules/actes/actes_download_file.php", "download", self.h_download),
            ("GET", "/modules/actes/actes_transac_get_document.php", "get_document", self.h_get_document),
            ("GET", "/modules/actes/api/list_document_prefecture.php", "list_documents", self.h_list_docs),
            ("GET", "/modules/actes/api/document_prefecture_mark_as_read.php", "mark_read", self.h_mark_read),
            ("POST", "/modules/actes/actes_transac_reponse_create.php", "reply", self.h_reply),
            ("POST", "/modules/helios/api/helios_importer_fichier.php", "post_pes", self.h_post_pes),
            ("GET", "/modules/helios/api/helios_transac_get_status.php", "pes_status", self.h_pes_status),
            ("GET", "/modules/helios/helios_download_acquit.php", "pes_acquit", self.h_pes_acquit),
            ("GET", "/modules/helios/api/helios_get_list.php", "pes_retour_list", self.h_retour_list),
            ("GET", "/modules/helios/api/helios_get_retour.php", "pes_retour", self.h_retour_get),
            ("GET", "/modules/helios/api/helios_change_status.php", "pes_retour_read", self.h_retour_read),
        ]
        self._endpoints = {path: name for _, path, name, _ in routes}
        # Without api=1 or on an error, S²LOW redirects to its HTML pages: serve them (200, HTML).
        for module in ("actes", "helios"):
            app.router.add_get(f"/modules/{module}/index.php", self.h_html)
        for method, path, _, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        endpoint = self._endpoints.get(request.path, request.path)
        if self.down:
            self.failures[endpoint] += 1
            return web.Response(status=503, text="Service Unavailable")
        scripted = self.fail.get(endpoint)
        if isinstance(scripted, list) and scripted:
            self.failures[endpoint] += 1
            return web.Response(status=scripted.pop(0), text="scripted failure")
        if isinstance(scripted, int):
            self.failures[endpoint] += 1
            return web.Response(status=scripted, text="scripted failure")
        account = self._authenticate(request)
        if isinstance(account, web.Response):
            return account
        request["account"] = account
        return await handler(request)

    # ---- authentication (tdt.md §3.1) ---------------------------------------------------------

    @staticmethod
    def _refuse(status: int, message: str) -> web.Response:
        headers = {"WWW-Authenticate": 'Basic realm="API S2low"'} if status == 401 else None
        return web.Response(status=status, body=f"KO\n{message}\n".encode("iso-8859-1", "replace"),
                            content_type="text/plain", charset="ISO-8859-1", headers=headers)

    def _authenticate(self, request: web.Request) -> Account | web.Response | None:
        """The account of this request, or S²LOW's refusal; None when the simulator has no accounts."""
        der = _peer_certificate(request)
        if self.ssl_context is not None and der is None:
            return self._refuse(403, "Aucun certificat client : la connexion à S²LOW exige un certificat "
                                     "d'authentification")
        if not self.accounts:
            return None
        candidates = [a for a in self.accounts if a.certificate is None or a.certificate == der]
        if not candidates:
            return self._refuse(403, "Certificat client inconnu : aucun compte S²LOW ne l'utilise")
        if request.path in CERT_ONLY:
            return candidates[0]
        q = request.query
        if "nounce" in q:
            entry = self.nonces.pop(q["nounce"], None)  # single use
            if (entry is None or self._now() - entry[2] > NONCE_LIFETIME or entry[0] != q.get("login")
                    or entry[1] != q.get("hash")):
                return self._refuse(401, "Nonce invalide, expiré ou déjà utilisé")
            self.auth_used[("nounce", entry[0])] += 1
            return next((a for a in candidates if a.login == entry[0]), None) or \
                self._refuse(403, "Ce compte n'utilise pas ce certificat")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                login, _, password = base64.b64decode(header[6:]).decode("iso-8859-1").partition(":")
            except ValueError:
                login, password = "", ""
            account = next((a for a in candidates if a.login == login), None)
            if account is None or account.password != password:
                return self._refuse(401, "Identifiant ou mot de passe incorrect")
            self.auth_used[("basic", login)] += 1
            return account
        if len(candidates) == 1 and candidates[0].certificate is not None:
            self.auth_used[("certificate", candidates[0].login)] += 1
            return candidates[0]
        if len(candidates) > 1 and all(a.certificate is not None for a in candidates):
            return self._refuse(401, "Plusieurs comptes utilisent ce certificat : identifiant et mot de passe "
                                     "requis")
        return self._refuse(401, "Authentification requise")

    def _is_rgs(self, request: web.Request) -> bool:
        """An RGS** connection: the client certificate, or the agent's one forwarded in the header, is RGS**."""
        forwarded = request.headers.get(FORWARD_HEADER)
        if forwarded:
            try:
                return base64.b64decode(forwarded, validate=True) in self.rgs_certificates
            except ValueError:
                return False
        return _peer_certificate(request) in self.rgs_certificates

    async def h_nounce(self, request: web.Request) -> web.Response:
        self._count("get_nounce", None)
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return web.Response(status=401, text="La fonction n'est utilisable qu'avec un login+mot de passe HTTP",
                                headers={"WWW-Authenticate": 'Basic realm="API S2low"'})
        login, _, password = base64.b64decode(header[6:]).decode("iso-8859-1").partition(":")
        nonce = secrets.token_hex(16)
        digest = hashlib.sha256(f"{password}:{nonce}".encode("iso-8859-1", "replace")).hexdigest()
        now = self._now()
        self.nonces = {k: v for k, v in self.nonces.items() if now - v[2] <= NONCE_LIFETIME}
        self.nonces[nonce] = (login, digest, now)
        return web.json_response({"nounce": nonce})

    async def h_info(self, request: web.Request) -> web.Response:
        self._count("info_connexion", None)
        account: Account | None = request.get("account")
        user = {"id": account.id if account else 1, "login": account.login if account else "",
                "name": account.name if account else "", "email": account.email if account else "",
                "role": "USER", "status": 1, "authority_id": 1}
        authority = {"id": 1, "authority_type_id": 1, "status": 1, "name": self.authority_name, "email": "",
                     "address": "", "postal_code": "", "city": "", "telephone": "",
                     "department": self.emetteur.departement, "district": "", "authority_group_id": None}
        return web.json_response({"user_info": user, "authority_info": authority})

    async def h_test_rgs(self, request: web.Request) -> web.Response:
        self._count("test_rgs", None)
        return web.Response(text="OK" if self._is_rgs(request) else "KO")

    async def h_list_login(self, request: web.Request) -> web.Response:
        self._count("list_login", None)
        der = _peer_certificate(request)
        logins = [a.login for a in self.accounts if a.certificate is not None and a.certificate == der]
        return web.Response(text="".join(f"{login}\n" for login in logins))

    async def h_actes_status(self, request: web.Request) -> web.Response:
        self._count("actes_status", None)
        return web.json_response([{"id": k, "name": v} for k, v in sorted(self.status_labels.items())])

    async def h_number_actes(self, request: web.Request) -> web.Response:
        self._count("number_actes", None)
        raw = request.query.get("status_id", "")
        status_id = int(raw) if raw.lstrip("-").isdigit() else 0
        now = self._now()
        n = sum(1 for t in self.transactions.values() if t.type == 1 and t.status_at(now)[0] == status_id)
        return web.json_response({"status_id": status_id, "authority_id": 1, "nb_transactions": n})

    async def h_tampon(self, request: web.Request) -> web.Response:
        """S²LOW < 2: the stamped act of an acknowledged transmission."""
        t = self._get(request.query.get("transaction"))
        self._count("get_tampon", t.number if t else None)
        if t is None or t.archive is None or t.status_at(self._now())[0] not in ACKNOWLEDGED:
            return self._ko("Acte tamponné indisponible")
        return web.Response(body=_tiny_pdf(f"Reçu en préfecture : {t.archive.id_acte}"),
                            content_type="application/pdf")

    async def h_post_confirm(self, request: web.Request) -> web.Response:
        """The agent's browser confirms a transmission posted ``en_attente`` (17 → 1) with his RGS** certificate,
        then goes back to ``url_return`` with %%ERROR%% (0/1) and %%MESSAGE%% replaced."""
        url_return = request.query.get("url_return", "")
        t = self._get(request.query.get("id"))
        self._count("post_confirm", t.number if t else None)

        def back(error: int, message: str) -> web.Response:
            target = url_return.replace("%%ERROR%%", str(error)).replace("%%MESSAGE%%", quote(message))
            if not target:
                return self._text(("KO\n" if error else "OK\n") + message + "\n")
            raise web.HTTPFound(target)

        if not self._is_rgs(request):
            return back(1, "La télétransmission nécessite un certificat RGS")
        if t is None or t.type != 1:
            return back(1, "Erreur d'initialisation de la transaction.")
        now = self._now()
        if t.status_at(now)[0] != 17:
            return back(1, "La transaction n'est pas dans le statut « En attente d'être posté»")
        self._schedule_acte(t, now)
        account = request.get("account")
        t.confirmed_by = account.login if account else "agent"
        return back(0, "")

    def _count(self, endpoint: str, key: str | None) -> None:
        self.calls[(endpoint, key)] += 1

    @staticmethod
    def _text(body: str, status: int = 200) -> web.Response:
        return web.Response(body=body.encode("iso-8859-1", "replace"), status=status,
                            content_type="text/plain", charset="ISO-8859-1")

    def _ko(self, message: str) -> web.Response:
        return self._text(f"KO\n{message}\n")

    @staticmethod
    def _xml(tag: str, **values: Any) -> web.Response:
        inner = "".join(f"<{k}>{_esc(v)}</{k}>" for k, v in values.items())
        body = f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<{tag}>{inner}</{tag}>\n'
        return web.Response(body=body.encode("iso-8859-1", "replace"), content_type="text/xml", charset="ISO-8859-1")

    # ---- ACTES -------------------------------------------------------------------------------

    async def h_html(self, request: web.Request) -> web.Response:
        error = request.query.get("error", "")
        return web.Response(text=f"<html><body><h1>S2LOW</h1><p>{_esc(error)}</p></body></html>",
                            content_type="text/html")

    async def h_test(self, request: web.Request) -> web.Response:
        self._count("test_connexion", None)
        return self._text("OK\n")

    async def h_post_acte(self, request: web.Request) -> web.Response:
        form = await request.post()
        number = str(form.get("number", ""))
        self._count("post_acte", number)
        if form.get("api") != "1":
            raise web.HTTPFound("/modules/actes/index.php")
        try:
            acte = self._acte_from_form(form)
        except ValidationError as exc:
            return self._ko(exc.message)
        if self.require_rgs and str(form.get("en_attente", "0")) != "1" and not self._is_rgs(request):
            return self._ko("La télétransmission nécessite une connexion RGS** : postez l'acte en attente "
                            "(en_attente=1) et faites-le confirmer par un agent")
        if any(t.type == 1 and t.number == acte.numero_interne for t in self.transactions.values()):
            return self._ko(f"Le numéro de l'acte {acte.numero_interne} est déjà utilisé : il doit être unique "
                            "pour la collectivité")
        now = self._now()
        key = now.date().isoformat()
        self._serials[key] += 1
        archive = A.build_archive(acte, self.emetteur, classification_date=self.classification.date,
                                  on=now.date(), serial=self._serials[key])
        t = Transaction(self._id(), 1, now, number=acte.numero_interne, acte=acte, archive=archive)
        if str(form.get("en_attente", "0")) == "1":
            t.timeline = [(now, 17, b"")]  # waits for an agent's RGS** confirmation (post_confirm)
        else:
            self._schedule_acte(t, now)
        self.transactions[t.id] = t
        return self._text(f"OK\n{t.id}\n")

    def _acte_from_form(self, form: Any) -> A.Acte:
        try:
            nature = int(str(form.get("nature_code", "")))
        except ValueError:
            raise ValidationError("nature_code absent ou invalide", field="nature_code") from None
        matiere = []
        for i in range(1, 6):
            value = str(form.get(f"classif{i}", "") or "")
            if value:
                if not value.isdigit():
                    raise ValidationError(f"classif{i} invalide", field=f"classif{i}")
                matiere.append(int(value))
        try:
            decision = date.fromisoformat(str(form.get("decision_date", "")))
        except ValueError:
            raise ValidationError("La date de décision est absente ou mal formée (AAAA-MM-JJ)",
                                  field="decision_date") from None
        pdf = form.get("acte_pdf_file")
        if not hasattr(pdf, "file"):
            raise ValidationError("Le fichier de l'acte est absent", field="acte_pdf_file")
        document = A.ActeFile(pdf.filename, pdf.file.read(), str(form.get("type_acte") or "") or None)
        types = form.getall("type_pj[]", [])
        annexes = []
        for i, f in enumerate(form.getall("acte_attachments[]", [])):
            if hasattr(f, "file"):
                annexes.append(A.ActeFile(f.filename, f.file.read(), str(types[i]) if i < len(types) else None))
        acte = A.Acte(nature, tuple(matiere), decision, str(form.get("number", "")), str(form.get("subject", "")),
                      document, tuple(annexes), str(form.get("document_papier", "0")) == "1")
        errs = A.acte_errors(acte, today=self._now().date(), classification=self.classification)
        for a in (document, *annexes):
            if not a.type_pj:
                errs.insert(0, ValidationError("typologie absente : chaque pièce doit porter son type", field="type_pj"))
        if errs:
            raise ValidationError("; ".join(e.message for e in errs), field=errs[0].field)
        return acte

    def _schedule_acte(self, t: Transaction, now: datetime) -> None:
        d = self.delays
        t.timeline = [(now, 1, b""), (now + d["validate"], 2, b""), (now + d["transmit"], 3, b"")]
        final_at = now + d["transmit"] + d["ar"]
        outcome, reason = self.scripts.get(t.number, (self.outcome, None))
        assert t.acte is not None and t.archive is not None
        doc_name = t.archive.members[2]
        annex_names = list(t.archive.members[3:])
        posted_with = self.classification.date
        if outcome in AFTER_AR:
            def ar() -> bytes:  # written when the préfecture answers: it names its classification of that day
                return M.build_ar_acte(t.acte, id_acte=t.archive.id_acte, date_reception=final_at.date(),
                                       classification_date=posted_with,
                                       classification_en_cours=self.classification.date,
                                       document_name=doc_name, annex_names=annex_names)
            t.timeline.append((final_at, 4, ar))  # type: ignore[arg-type]
            at = final_at
            for later in AFTER_AR[outcome]:  # S²LOW's archiving: those statuses carry no flux_retour
                at = at + d["archive"] + timedelta(microseconds=1)
                t.timeline.append((at, later, b""))
        elif outcome == "anomaly":
            nature, detail = (self.anomaly[0], reason) if reason else self.anomaly
            xml = M.build_anomalie_acte(t.acte, on=final_at.date(), nature=nature, detail=detail,
                                        classification_date=self.classification.date,
                                        classification_en_cours=self.classification.date,
                                        document_name=doc_name, annex_names=annex_names)
            t.files["anomalie"] = xml
            t.timeline.append((final_at, -1, f"Anomalie signalee par la prefecture : {nature} - {detail}"
                               .encode("iso-8859-1", "replace")))
        elif outcome == "refused":
            t.timeline.append((final_at, 6, (reason or self.refusal_reason).encode("iso-8859-1", "replace")))
        else:
            raise ValueError(f"unknown scripted outcome {outcome!r}")

    def _get(self, raw: Any) -> Transaction | None:
        try:
            return self.transactions.get(int(str(raw)))
        except ValueError:
            return None

    async def h_status(self, request: web.Request) -> web.Response:
        tid = request.query.get("transaction")
        t = self._get(tid)
        if t is None and request.query.get("unique_id"):
            t = next((x for x in self.transactions.values()
                      if x.archive and x.archive.id_acte == request.query["unique_id"]), None)
        self._count("get_status", t.number if t and t.number else tid)
        if t is None:
            return self._ko("La transaction n'existe pas")
        status, payload = t.status_at(self._now())
        if callable(payload):
            payload = payload()
        body = b"OK\n" + str(status).encode() + b"\n" + payload
        return web.Response(body=body, content_type="text/plain", charset="ISO-8859-1")

    async def h_cancel(self, request: web.Request) -> web.Response:
        form = await request.post()
        t = self._get(form.get("id"))
        self._count("cancel", t.number if t else str(form.get("id")))
        if t is None or t.type != 1:
            return self._ko("Transaction inconnue")
        now = self._now()
        status, _ = t.status_at(now)
        if status != 4:
            return self._ko(f"Annulation impossible : l'acte n'est pas acquitté (statut {status})")
        if any(x.type == 6 and x.related == t.id for x in self.transactions.values()):
            return self._ko("Une annulation est déjà en cours pour cet acte")
        assert t.archive is not None
        c = Transaction(self._id(), 6, now, number=t.number, related=t.id)
        done_at = now + self.delays["transmit"] + self.delays["ar"]
        c.files["annulation"] = M.build_annulation(t.archive.id_acte)
        ar = M.build_ar_annulation(t.archive.id_acte, done_at.date())
        c.timeline = [(now, 1, b""), (now + self.delays["transmit"], 3, b""), (done_at, 4, ar)]
        t.timeline.append((done_at, 0, ar))
        self.transactions[c.id] = c
        return self._text(f"OK\n{c.id}\n")

    async def h_classification(self, request: web.Request) -> web.Response:
        self._count("classification", None)
        if request.query.get("api") != "1":
            raise web.HTTPFound("/modules/actes/index.php")
        if self.classification is None:
            return self._ko("Aucune classification n'a encore été reçue de la préfecture")
        return web.Response(body=build_classification(self.classification), content_type="text/xml",
                            charset="ISO-8859-1")

    async def h_classif_req(self, request: web.Request) -> web.Response:
        self._count("classification_request", None)
        now = self._now()
        t = Transaction(self._id(), 7, now)
        current = self.classification.date if self.classification else None
        if self.classification is None:  # the préfecture answers with its classification
            self.classification = sample_classification()
        t.files["demande"] = M.build_demande_classification(current)
        t.timeline = [(now, 1, b""), (now + self.delays["transmit"] + self.delays["ar"], 4,
                                      build_classification(self.classification))]
        self.transactions[t.id] = t
        return self._text(f"OK\n{t.id}\n")

    async def h_list_actes(self, request: web.Request) -> web.Response:
        self._count("list_actes", None)
        now = self._now()
        rows = []
        for t in sorted(self.transactions.values(), key=lambda x: x.id):
            status, _ = t.status_at(now)
            if request.query.get("status_id") and str(status) != request.query["status_id"]:
                continue
            rows.append({"id": str(t.id), "type": str(t.type), "number": t.number, "last_status_id": str(status),
                         "decision_date": t.acte.decision_date.isoformat() if t.acte else None,
                         "subject": t.acte.objet if t.acte else None,
                         "unique_id": t.archive.id_acte if t.archive else None})
        offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 100))
        return web.json_response(rows[offset:offset + limit])

    async def h_bordereau(self, request: web.Request) -> web.Response:
        t = self._get(request.query.get("trans_id"))
        self._count("bordereau", t.number if t else None)
        if t is None or t.status_at(self._now())[0] not in ACKNOWLEDGED or t.archive is None:
            return self._ko("Bordereau indisponible")
        text = f"Bordereau d'acquittement {t.archive.id_acte}"
        return web.Response(body=_tiny_pdf(text), content_type="application/pdf")

    async def h_files(self, request: web.Request) -> web.Response:
        t = self._get(request.query.get("transaction"))
        self._count("files_list", t.number if t else None)
        if t is None or t.archive is None or t.status_at(self._now())[0] in (1, 2, 3, 16):
            return self._ko("Fichiers indisponibles")
        names = t.archive.members[1:]
        out = [{"id": f"{t.id}:{i}", "name": n, "posted_filename": n, "mimetype": A.sniff_media_type(
            t.archive.files[n]) or "application/octet-stream", "size": len(t.archive.files[n]), "sign": "",
                "code_pj": n.split("-")[0] if i else ""} for i, n in enumerate(names)]
        return web.json_response(out)

    async def h_download(self, request: web.Request) -> web.Response:
        self._count("download", None)
        if "env" in request.query:
            t = self._get(request.query["env"])
            if t is None or "archive" not in t.files:
                return self._ko("Enveloppe inconnue")
            return web.Response(body=t.files["archive"], content_type="application/x-gzip")
        tid, _, idx = request.query.get("file", "").partition(":")
        t = self._get(tid)
        if t is None or t.archive is None or not idx.isdigit() or int(idx) + 1 >= len(t.archive.members):
            return self._ko("Fichier inconnu")
        name = t.archive.members[int(idx) + 1]
        self._count("download_tampon" if request.query.get("tampon") == "true" else "download_file", t.number)
        if request.query.get("tampon") == "true" and name.lower().endswith(".pdf") and int(idx) >= 1:
            # the act as S²LOW stamps it: « Reçu en préfecture le … », its identifier and the display date
            when = request.query.get("date_affichage")
            text = f"Reçu en préfecture : {t.archive.id_acte}" + (f" — affiché le {when}" if when else "")
            return web.Response(body=_tiny_pdf(text), content_type="application/pdf")
        return web.Response(body=t.archive.files[name], content_type="application/octet-stream")

    async def h_get_document(self, request: web.Request) -> web.Response:
        t = self._get(request.query.get("id"))
        self._count("get_document", t.number if t else None)
        if t is None:
            return self._ko("Transaction inconnue")
        if t.type == 1:
            now = self._now()
            lines = [f"{x.type}-{x.status_at(now)[0]}-{x.id}" for x in self.transactions.values()
                     if x.related == t.id]
            return self._text("\n".join(lines) + ("\n" if lines else ""))
        raise web.HTTPFound(f"/modules/actes/actes_download_file.php?env={t.id}")

    async def h_list_docs(self, request: web.Request) -> web.Response:
        self._count("list_documents", None)
        now = self._now()
        rows = [{"id": str(t.id), "type": str(t.type), "number": t.number, "related_transaction_id": str(t.related),
                 "last_status_id": str(t.status_at(now)[0]),
                 "date_courrier": t.letter_date.isoformat() if t.letter_date else None}
                for t in self.transactions.values() if t.unread and t.type in LETTER_STATUS]
        return web.json_response(rows)

    async def h_mark_read(self, request: web.Request) -> web.Response:
        t = self._get(request.query.get("transaction_id"))
        self._count("mark_read", t.number if t else None)
        if t is None:
            return web.json_response({"result": "ko", "message": "transaction inconnue"})
        t.unread = False
        return web.json_response({"result": "ok"})

    async def h_reply(self, request: web.Request) -> web.Response:
        form = await request.post()
        letter = self._get(form.get("id"))
        self._count("reply", letter.number if letter else None)
        if form.get("api") != "1" or letter is None or letter.type not in (2, 3, 4):
            return self._ko("Le courrier de la préfecture n'existe pas ou n'appelle pas de réponse")
        try:
            type_envoie = int(str(form.get("type_envoie", "")))
        except ValueError:
            return self._ko("type_envoie absent")
        original = self.transactions[letter.related] if letter.related else None
        pdf = form.get("acte_pdf_file")
        if original is None or original.archive is None or not hasattr(pdf, "file"):
            return self._ko("Le document de réponse est absent")
        names = [pdf.filename] + [f.filename for f in form.getall("acte_attachments[]", []) if hasattr(f, "file")]
        try:
            message = M.build_reponse(letter.type, type_envoie, id_acte=original.archive.id_acte,
                                      date_courrier=letter.letter_date or self._now().date(), document_names=names)
        except Exception as exc:  # noqa: BLE001 - the TdT answers KO with the reason
            return self._ko(str(exc))
        now = self._now()
        r = Transaction(self._id(), letter.type, now, number=letter.number, related=letter.id)
        r.files["reponse"] = message
        r.timeline = [(now, 1, b""), (now + self.delays["transmit"], 3, b"")]
        if (letter.type, type_envoie) in ((3, 4), (4, 3), (4, 4), (3, 3)):
            kind = "ARPieceComplementaire" if letter.type == 3 else "ARReponseRejetLettreObservations"
            done = now + self.delays["transmit"] + self.delays["ar"]
            r.timeline.append((done, 11, M.build_ar_reponse(kind, id_acte=original.archive.id_acte,
                                                            date_courrier=letter.letter_date or now.date(),
                                                            date_reception=done.date())))
        self.transactions[r.id] = r
        return self._text(f"OK\n{r.id}\n")

    def send_letter(self, transaction_id: int | str, kind: str, *, text: str = "",
                    document: bytes | None = None) -> int:
        """The préfecture sends a letter about an act: ``CourrierSimple``, ``DemandePieceComplementaire``,
        ``LettreObservations`` or ``DefereTA``.  Returns the new transaction id."""
        original = self.transactions[int(transaction_id)]
        assert original.archive is not None
        now = self._now()
        ltype = M.PREFECTURE_LETTERS[kind]
        t = Transaction(self._id(), ltype, now, number=original.number, related=original.id, unread=True,
                        letter_date=now.date())
        code = {2: "2-1", 3: "3-1", 4: "4-1", 5: "5-1"}[ltype]
        base = original.archive.id_acte
        msg_name, pdf_name = f"{base}-{code}_0.xml", f"{base}-{code}_1.pdf"
        message = M.build_prefecture_letter(kind, id_acte=base, on=now.date(), document_name=pdf_name, text=text)
        env_name = f"EACT--PREF{self.emetteur.departement}-{self.emetteur.siren}-{now:%Y%m%d}-{t.id}.xml"
        env = M.build_enveloppe_misillcl(departement=self.emetteur.departement, siren=self.emetteur.siren,
                                         message_names=[msg_name])
        t.files["message"] = message
        t.files["archive"] = A.tar_gz([(env_name, env), (msg_name, message),
                                       (pdf_name, document or _tiny_pdf(f"{kind} {base}"))])
        t.timeline = [(now, LETTER_STATUS[ltype], message)]
        self.transactions[t.id] = t
        return t.id

    # ---- HELIOS ------------------------------------------------------------------------------

    async def h_post_pes(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("enveloppe")
        if not hasattr(upload, "file"):
            self._count("post_pes", None)
            return self._xml("import", id="", resultat="KO", message="Fichier enveloppe absent")
        content = upload.file.read()
        index, errs = pes_errors(content)
        nom_fic = index.nom_fic if index and index.nom_fic else upload.filename
        self._count("post_pes", nom_fic)
        sha1 = hashlib.sha1(content).hexdigest()
        if any(p.sha1 == sha1 for p in self.pes.values()):
            return self._xml("import", id="", resultat="KO", message="Doublon : ce fichier a déjà été transmis")
        now = self._now()
        p = PesTransaction(self._id(), nom_fic, upload.filename, sha1, content)
        p.timeline = [(now, 1, "Posté")]
        d = self.delays
        if errs or index is None:
            p.timeline.append((now + d["validate"], -1, "; ".join(f"{e.field} : {e.message}" for e in errs)))
        else:
            p.timeline += [(now + d["validate"], 2, "En attente de transmission"),
                           (now + d["pes_transmit"], 3, "Transmis")]
            done = now + d["pes_transmit"] + d["pes_acquit"]
            outcome = self.pes_scripts.get(nom_fic, self.pes_outcome)
            if outcome == "cancelled":
                p.timeline.append((done, 0, "Annulé"))
            elif outcome == "nack":
                p.timeline.append((done, 6, "Refusé par Hélios"))
            elif outcome == "errors":
                pj = index.pjs[0].id_unique if index.pjs else "TI00000001"
                p.acquit = build_pes_acquit(index, errors=[(4, "ERREUR_DOUBLON_PJ", f"1984 - L'identifiant unique "
                                                            f"de la PJ {pj} a déjà été intégré dans HELIOS")])
                p.timeline.append((done, 8, "Information disponible"))
            else:
                p.acquit = build_pes_acquit(index)
                p.timeline.append((done, 4, "Acquitté"))
                at = done
                for later in PES_AFTER_ACQUIT.get(outcome, ()):
                    at = at + d["archive"] + timedelta(microseconds=1)
                    p.timeline.append((at, later, HELIOS_LABELS.get(later, "")))
        self.pes[p.id] = p
        return self._xml("import", id=p.id, resultat="OK", message="Le fichier PES a été importé")

    def _pes(self, raw: Any) -> PesTransaction | None:
        try:
            return self.pes.get(int(str(raw)))
        except ValueError:
            return None

    async def h_pes_status(self, request: web.Request) -> web.Response:
        p = self._pes(request.query.get("transaction"))
        self._count("pes_status", p.nom_fic if p else None)
        if p is None:
            return self._xml("transaction", id=request.query.get("transaction", ""), resultat="KO",
                             message="Transaction inconnue")
        status, message = p.status_at(self._now())
        return self._xml("transaction", id=p.id, resultat="OK", message=message, status=status)

    async def h_pes_acquit(self, request: web.Request) -> web.Response:
        p = self._pes(request.query.get("id"))
        self._count("pes_acquit", p.nom_fic if p else None)
        if p is None or p.acquit is None or p.status_at(self._now())[0] not in PES_WITH_ACQUIT:
            raise web.HTTPFound("/modules/helios/index.php?error=acquit")
        return web.Response(body=p.acquit, content_type="text/xml", charset="ISO-8859-1")

    def add_pes_retour(self, name: str, xml: bytes) -> int:
        rid = self._id()
        self.pes_retours[rid] = (name, xml, False)
        return rid

    async def h_retour_list(self, request: web.Request) -> web.Response:
        self._count("pes_retour_list", None)
        items = "".join(f"<pes_retour><id>{rid}</id><nom>{_esc(name)}</nom><date>{self._now().date()}</date>"
                        f"</pes_retour>" for rid, (name, _, read) in self.pes_retours.items() if not read)
        body = (f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<liste><idColl>{self.emetteur.siren}</idColl>'
                f"<dateDemande>{self._now().date()}</dateDemande><resultat>OK</resultat><message/>{items}</liste>\n")
        return web.Response(body=body.encode("iso-8859-1"), content_type="text/xml", charset="ISO-8859-1")

    async def h_retour_get(self, request: web.Request) -> web.Response:
        rid = request.query.get("id", "")
        self._count("pes_retour", rid)
        entry = self.pes_retours.get(int(rid)) if rid.isdigit() else None
        if entry is None:
            return self._xml("get_retour", id=rid, resultat="KO", message="PES Retour inconnu")
        return web.Response(body=entry[1], content_type="text/xml", charset="ISO-8859-1")

    async def h_retour_read(self, request: web.Request) -> web.Response:
        rid = request.query.get("id", "")
        self._count("pes_retour_read", rid)
        entry = self.pes_retours.get(int(rid)) if rid.isdigit() else None
        if entry is None:
            return self._xml("transaction", idRetour=rid, resultat="KO", message="PES Retour inconnu")
        self.pes_retours[int(rid)] = (entry[0], entry[1], True)
        return self._xml("transaction", idRetour=rid, resultat="OK", message="Statut changé")


def _esc(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tiny_pdf(text: str) -> bytes:
    """A minimal valid one-page PDF carrying ``text`` (bordereaux and préfecture letters)."""
    safe = text.encode("latin-1", "replace").decode("latin-1").replace("(", "[").replace(")", "]")
    stream = f"BT /F1 12 Tf 50 780 Td ({safe}) Tj ET".encode("latin-1")
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowbus.connectors.tdt.s2low_sim",
                                     description="Simulateur S²LOW (démo et tests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--delay-ar", type=float, default=60.0, help="secondes entre la transmission et l'AR")
    parser.add_argument("--delay-transmit", type=float, default=5.0)
    parser.add_argument("--outcome", choices=["ar", "anomaly", "refused"], default="ar")
    parser.add_argument("--pes-outcome", choices=["ok", "errors", "nack"], default="ok")
    parser.add_argument("--siren", default="123456789")
    parser.add_argument("--departement", default="034")
    parser.add_argument("--login")
    parser.add_argument("--password")
    parser.add_argument("--tls-cert", help="certificat et clé du serveur (PEM) : le simulateur répond en HTTPS")
    parser.add_argument("--tls-client-ca", help="AC des certificats clients (PEM), exigés comme sur S²LOW")
    parser.add_argument("--tls-client-optional", action="store_true",
                        help="accepter la poignée de main sans certificat client (refus par S²LOW ensuite)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_client_ca):
        parser.error("--tls-cert et --tls-client-ca vont ensemble")
    ctx = tls_context(args.tls_cert, args.tls_client_ca, require_client_cert=not args.tls_client_optional) \
        if args.tls_cert else None
    sim = S2lowSimulator(delays={"transmit": timedelta(seconds=args.delay_transmit),
                                 "ar": timedelta(seconds=args.delay_ar),
                                 "pes_transmit": timedelta(seconds=args.delay_transmit),
                                 "pes_acquit": timedelta(seconds=args.delay_ar)},
                         outcome=args.outcome, pes_outcome=args.pes_outcome, siren=args.siren,
                         departement=args.departement, login=args.login, password=args.password, ssl_context=ctx)

    async def run() -> None:
        url = await sim.start(args.host, args.port)
        print(json.dumps({"url": url, "siren": args.siren, "departement": args.departement}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Settings: the only module that reads the environment (FLOWBUS_* variables, optional env file).

With no settings at all every backend is the embedded default under ``FLOWBUS_DATA_DIR``
(default ``./var``): SQLite state store, filesystem blobs, embedded bus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
BUS_SCHEMES = ("amqp://", "amqps://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWBUS_", env_file=("config/flowbus.env",),
                                      env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Path("var")
    config_dir: Path = Path("config")

    # state store: "sqlite" (embedded default) or a postgresql:// DSN
    database_url: str = ""
    # bus: "embedded" or an amqp:// URL
    bus_url: str = "embedded"
    bus_prefix: str = "flowbus"
    # embedded bus: how long a message taken by a worker stays hidden before another worker may take it
    bus_lease_seconds: float = 30.0
    # blobs: "filesystem" (embedded default) or "s3"
    blob_backend: Literal["filesystem", "s3"] = "filesystem"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: SecretStr = SecretStr("minioadmin")
    s3_bucket: str = "flowbus"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # how users reach this server (links in mails); default http://host:port
    max_upload_size: int = 200 * 1024 * 1024
    # the PES viewer (/admin/documents/…/pes/…) reads PES_Aller files up to this size; larger ones are downloaded
    pes_view_max_size: int = Field(default=200 * 1024 * 1024, ge=1)
    # `flowbus serve --demo` and the tests: load config/demo/ (kind `test` connectors) and allow test kinds;
    # a real install leaves it off, and then never reports a step done by a connector that did nothing
    demo: bool = False
    workers: int = Field(default=16, description="concurrent step runs per worker process")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    seda_xsd_dir: Path | None = None  # default: the shipped schemas/seda (flowbus.schemas)
    schemas_dir: Path = Path("schemas")  # the official XSDs shipped with the project
    # secrets at rest (flowbus.secretbox): Fernet keys, comma-separated, the first encrypts; else the key file
    secret_keys: SecretStr = SecretStr("")
    secret_key_file: Path | None = None  # default <data dir>/secret.key

    # the platform's own e-mail (password reset, invitations): empty host = not configured
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = "flowbus@localhost"
    smtp_starttls: bool = False
    smtp_tls: bool = False  # implicit TLS (port 465)

    # single sign-on for people: OpenID Connect (empty issuer = off) and CAS 3.0 (empty URL = off)
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_claim: str = "preferred_username"  # the ID token claim that names the account (its login)
    oidc_label: str = "Se connecter avec le compte de la collectivité"
    cas_url: str = ""  # e.g. https://cas.example.fr/cas
    cas_label: str = "Se connecter avec CAS"

    # outbound requests (flowbus.outbound): public addresses only, plus these hosts, networks and domains,
    # comma-separated (``127.0.0.1,10.0.0.0/8,s2low.example,*.interne.example``)
    outbound_allow: str = ""
    # reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (flowbus.forwarded), comma-separated
    # addresses or networks; empty: the TCP peer is the client and only a direct TLS connection is HTTPS
    trusted_proxies: str = ""

    # failed authentications (flowbus.people.limits), shared by every process through the store: an address
    # (an IPv6 /64) is refused (429) after auth_address_max failures in the window, an identity (login, key id)
    # after auth_identity_max, each for auth_block_seconds
    auth_address_max: int = Field(default=8, ge=1)
    auth_identity_max: int = Field(default=30, ge=1)
    auth_window_seconds: int = Field(default=900, ge=1)
    auth_block_seconds: int = Field(default=900, ge=1)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "flowbus.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def flows_dir(self) -> Path:
        return self.config_dir / "flows"

    # a mistyped URL is an error at start, never a silent fall back to the embedded default
    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(DATABASE_SCHEMES):
            scheme = value.split(":", 1)[0] if ":" in value else value
            raise ValueError(f"FLOWBUS_DATABASE_URL « {scheme}:… » n'est pas prise en charge : laissez-la vide "
                             "(SQLite sous FLOWBUS_DATA_DIR), ou donnez sqlite:///chemin ou postgresql://…")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        from flowbus.forwarded import parse
        parse(value)  # a wrong entry is an error at start, named in French
        return value.strip()

    @field_validator("outbound_allow")
    @classmethod
    def _outbound(cls, value: str) -> str:
        from flowbus.outbound import OutboundPolicy
        OutboundPolicy.parse(value)  # a wrong entry is an error at start, named in French
        return value.strip()

    @field_validator("bus_url")
    @classmethod
    def _bus(cls, value: str) -> str:
        value = value.strip()
        if value != "embedded" and not value.startswith(BUS_SCHEMES):
            raise ValueError(f"FLOWBUS_BUS_URL « {value.split('@')[-1]} » n'est pas prise en charge : « embedded » "
                             "(bus intégré) ou amqp://utilisateur:motdepasse@hôte:5672/ (RabbitMQ)")
        return value

    @property
    def connectors_dir(self) -> Path:
        return self.config_dir / "connectors"

    @property
    def demo_dir(self) -> Path:
        return self.config_dir / "demo"

    @property
    def trust_dir(self) -> Path:
        """The trust list of ``flowbus verify``: CA certificates (PEM or DER), one or more per file."""
        return self.config_dir / "trust"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://"))

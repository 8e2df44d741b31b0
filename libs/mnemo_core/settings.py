"""Typed settings: runtime flags > env `MNEMO_*` > `$MNEMO_HOME/config.toml` > defaults.

The config file holds common keys at the top level and one table per service
(`[agent]`, `[memory]`, `[tools]`, `[llm]`, `[gateway]`) whose keys override
the top level for that service only.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mnemo_core import mesh_credential
from mnemo_core.quotas import FailureThrottle, Rate, RateLimits

# Megabytes of page cache each SQLite connection may keep (PRAGMA cache_size). It fills as the database
# grows and then stays part of the service's memory: a service has a writer, two readers and the async
# engine's connections, so its bound is a few times this. The OS keeps the file's pages cached as well.
DEFAULT_SQLITE_CACHE_MB = 8

ServiceName = Literal["agent", "memory", "tools", "llm", "gateway"]
GRPC_SERVICES: tuple[ServiceName, ...] = ("agent", "memory", "tools", "llm")


def default_home() -> Path:
    """The data directory: `MNEMO_HOME`, else `~/.mnemo`."""
    return Path(os.environ.get("MNEMO_HOME") or "~/.mnemo").expanduser()


def config_file_path() -> Path:
    """The config file: `MNEMO_CONFIG`, else `$MNEMO_HOME/config.toml`."""
    explicit = os.environ.get("MNEMO_CONFIG")
    return Path(explicit).expanduser() if explicit else default_home() / "config.toml"


class _ConfigFileSource(InitSettingsSource):
    """Reads the TOML config file: top-level keys, then the service's own table over them."""

    def __init__(self, settings_cls: type[BaseSettings], section: str) -> None:
        path = config_file_path()
        data: dict[str, Any] = {}
        if path.is_file():
            with path.open("rb") as f:
                raw = tomllib.load(f)
            data = {k: v for k, v in raw.items() if not isinstance(v, dict)}
            own = raw.get(section, {})
            if isinstance(own, dict):
                data.update(own)
        super().__init__(settings_cls, init_kwargs=data)


class MnemoSettings(BaseSettings):
    """Settings every process of the mesh shares: where data lives and how to reach each service."""

    model_config = SettingsConfigDict(env_prefix="MNEMO_", extra="ignore", populate_by_name=True)
    # Table of the config file that overrides the top level for this process.
    section: ClassVar[str] = "common"

    home: Path = Field(default_factory=default_home)
    grpc_host: str = "127.0.0.1"
    agent_port: int = 8284
    memory_port: int = 8285
    tools_port: int = 8286
    llm_port: int = 8287
    # Addresses other processes use to reach a service; empty means 127.0.0.1:<port>.
    agent_addr: str = ""
    memory_addr: str = ""
    tools_addr: str = ""
    llm_addr: str = ""
    # Prometheus endpoints (`GET /metrics`) of the gRPC services, on grpc_host; 0 turns one off. The REST
    # gateway serves its own on its HTTP port.
    agent_metrics_port: int = 9284
    memory_metrics_port: int = 9285
    tools_metrics_port: int = 9286
    llm_metrics_port: int = 9287
    # The mesh's internal credential (signs the actor on every internal hop); unset means the key generated
    # at first start into $MNEMO_HOME/internal_key (mode 0600). Every process of one mesh needs the same one.
    internal_token: SecretStr | None = None
    # The root (bootstrap) API key; unset means the one generated at first start into $MNEMO_HOME/api_key.
    api_key: SecretStr | None = None
    # Seconds an API key's identity (org, user, role) is reused without asking the agent service; a
    # revoked key keeps working for at most this long. 0 asks on every request.
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    log_level: str = "INFO"
    # `text` for a terminal, `json` (one object per line, with trace ids) for a log pipeline.
    log_format: Literal["json", "text"] = "text"
    # Seconds a stopping process (SIGTERM) lets in-flight requests and turns finish before cutting them off.
    shutdown_grace: float = 10.0
    # The allocator (glibc; mnemo_core.heap): seconds between returns of its free memory to the system
    # (malloc_trim; 0 never), and the most arenas it keeps (0: glibc's default, 8 per core).
    malloc_trim_seconds: float = Field(default=60.0, ge=0)
    malloc_arenas: int = Field(default=2, ge=0)
    # Limits (docs/adr/0412-limits-quotas-audit-and-secrets-at-rest.md). Rates are calls a second refilling a bucket of
    # `*_burst` calls; 0 turns a limit off. Buckets are per process: with N replicas a client may get up
    # to N times the rate.
    rate_limit_per_key: float = Field(default=50.0, ge=0)
    rate_limit_per_key_burst: float = Field(default=200.0, ge=1)
    rate_limit_per_org: float = Field(default=200.0, ge=0)
    rate_limit_per_org_burst: float = Field(default=800.0, ge=1)
    # Failed authentications a client address may make a second (and in a burst) before it is refused
    # without the key being checked; a key that failed is refused at once for `auth_negative_ttl_seconds`.
    auth_failure_rate: float = Field(default=2.0, ge=0)
    auth_failure_burst: float = Field(default=20.0, ge=1)
    auth_negative_ttl_seconds: float = Field(default=30.0, ge=0)
    # The largest gRPC message a server or mesh channel accepts.
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)

    def rate_limits(self) -> RateLimits:
        """Token buckets for API-key callers, as configured."""
        return RateLimits(
            Rate(self.rate_limit_per_key, self.rate_limit_per_key_burst),
            Rate(self.rate_limit_per_org, self.rate_limit_per_org_burst),
        )

    def failure_throttle(self) -> FailureThrottle:
        """The throttle on failed authentications, as configured."""
        return FailureThrottle(
            Rate(self.auth_failure_rate, self.auth_failure_burst), self.auth_negative_ttl_seconds
        )

    # TLS on the gRPC ports (and the REST port): PEM certificate chain and private key. Unset means plaintext,
    # the default for the loopback addresses a single machine uses. Set both, or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The CA certificate(s) the mesh's own clients trust when the services serve TLS; unset means the
    # certificate above (a self-signed one trusts itself).
    tls_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> MnemoSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        return self

    @property
    def tls(self) -> bool:
        """Whether the services serve TLS."""
        return self.tls_cert_file is not None

    def tls_trust(self) -> bytes | None:
        """What mesh clients trust (PEM), or None for plaintext."""
        if self.tls_cert_file is None:
            return None
        return (self.tls_ca_file or self.tls_cert_file).read_bytes()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls, cls.section))

    def internal_credential(self) -> str:
        """The mesh's internal credential: `internal_token` when set, else the install's generated key."""
        if self.internal_token is not None:
            return self.internal_token.get_secret_value()
        return mesh_credential.ensure_key(self.home)

    def root_key(self) -> str | None:
        """The root API key when this process can know it: `api_key`, else the generated file (never made here)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        path = self.home / "api_key"
        return path.read_text().strip() if path.is_file() else None

    def port_of(self, service: ServiceName) -> int:
        """The gRPC port a service listens on."""
        port: int = getattr(self, f"{service}_port")
        return port

    def metrics_port_of(self, service: ServiceName) -> int:
        """The port of a gRPC service's Prometheus endpoint; 0 when it has none."""
        port: int = getattr(self, f"{service}_metrics_port", 0)
        return port

    def address_of(self, service: ServiceName) -> str:
        """The `host:port` at which other processes reach a service."""
        addr: str = getattr(self, f"{service}_addr")
        return addr or f"127.0.0.1:{self.port_of(service)}"


class ServiceSettings(MnemoSettings):
    """Settings of one gRPC service with its own database."""

    service: ClassVar[ServiceName]
    # SQLAlchemy async URL; empty means the embedded SQLite file $MNEMO_HOME/data/<service>.db.
    # A Postgres URL may be shared by all services: each uses its own schema.
    database_url: str = ""
    # Run pending migrations at start (true), or leave them to a job (`mnemo migrate <service>`) and wait
    # for the schema to reach this release's revision (false, in a cluster).
    migrate: bool = True
    # How long a service that does not migrate waits for its schema before it gives up (seconds).
    schema_wait_seconds: float = Field(default=300.0, ge=0)
    # Megabytes of SQLite page cache per connection (the embedded database only; see mnemo_core.db).
    sqlite_cache_mb: int = Field(default=DEFAULT_SQLITE_CACHE_MB, ge=1)
    # The asyncio event loop: uvloop (libuv; installed with uvicorn[standard]) costs the turn's services
    # less CPU per call than the standard library's (docs/adr/0413-server-cpu-per-message.md); `asyncio` is
    # the fallback, and what a service gets when uvloop cannot be imported.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    def resolved_database_url(self) -> str:
        """The database URL, with the embedded SQLite default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.home / 'data' / f'{self.service}.db'}"

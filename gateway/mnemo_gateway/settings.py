"""Settings of the REST gateway."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from mnemo_core.settings import MnemoSettings


class GatewaySettings(MnemoSettings):
    """`MNEMO_*` env and the `[gateway]` table of the config file."""

    section: ClassVar[str] = "gateway"

    http_host: str = "127.0.0.1"
    http_port: int = 8283
    # The one gRPC address for clients outside the mesh (on http_host): every service's calls, health and
    # reflection, routed to the owning process (grpc_front.py). 0 turns it off.
    grpc_port: int = Field(default=8288, ge=0)
    # The REST API key; unset means one generated at first start and kept in $MNEMO_HOME/api_key.
    api_key: SecretStr | None = None
    # Seconds a REST request may wait for the mesh (a whole agent turn included).
    http_request_timeout: float = 600.0
    # Origins whose browser pages may call the API (CORS), e.g. ["https://app.example.com"]; none by default.
    # "*" allows any origin: keys are sent as a bearer header, never as cookies, so no credentials mode is used.
    cors_origins: list[str] = Field(default_factory=list)

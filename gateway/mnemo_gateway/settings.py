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
    # The REST API key; unset means one generated at first start and kept in $MNEMO_HOME/api_key.
    api_key: SecretStr | None = None
    # Seconds a REST request may wait for the mesh (a whole agent turn included).
    http_request_timeout: float = 600.0

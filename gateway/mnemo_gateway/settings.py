"""Settings of the REST gateway."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from mnemo_core.settings import MnemoSettings


class GatewaySettings(MnemoSettings):
    """`MNEMO_*` env and the `[gateway]` table of the config file."""

    section: ClassVar[str] = "gateway"

    http_host: str = "127.0.0.1"
    http_port: int = 8283
    # The one gRPC address for clients outside the mesh (on http_host): every service's calls, health and
    # reflection, routed to the owning process (grpc_front.py). 0 turns it off.
    grpc_port: int = Field(default=8288, ge=0)
    # TLS on the REST port: PEM certificate chain and key. Unset means the mesh's own (`tls_cert_file` /
    # `tls_key_file`), and plaintext when those are unset too. A public certificate for browsers can go here
    # while the gRPC ports keep a private one.
    http_tls_cert_file: Path | None = None
    http_tls_key_file: Path | None = None
    # The largest request body accepted (413 beyond it, refused while it arrives); a 60 MiB upload fits.
    max_request_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Seconds a REST request may wait for the mesh (a whole agent turn included).
    http_request_timeout: float = 600.0
    # Origins whose browser pages may call the API (CORS), e.g. ["https://app.example.com"]; none by default.
    # "*" allows any origin: keys are sent as a bearer header, never as cookies, so no credentials mode is used.
    cors_origins: list[str] = Field(default_factory=list)

    def http_tls(self) -> tuple[Path, Path] | None:
        """The certificate and key the REST port serves TLS with, or None for plaintext."""
        if self.http_tls_cert_file is not None and self.http_tls_key_file is not None:
            return self.http_tls_cert_file, self.http_tls_key_file
        if self.http_tls_cert_file is not None or self.http_tls_key_file is not None:
            raise ValueError("set both http_tls_cert_file and http_tls_key_file, or neither")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            return self.tls_cert_file, self.tls_key_file
        return None

    @property
    def http_url(self) -> str:
        """The REST API's base URL."""
        scheme = "https" if self.http_tls() else "http"
        return f"{scheme}://{self.http_host}:{self.http_port}"

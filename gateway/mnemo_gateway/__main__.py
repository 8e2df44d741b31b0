"""`python -m mnemo_gateway`: run the REST gateway."""

from __future__ import annotations

import uvicorn

from mnemo_core.heap import tend_heap
from mnemo_core.lifecycle import follow_parent, freeze_startup_objects
from mnemo_core.logs import configure_logging
from mnemo_core.memory_probe import start_memory_probe
from mnemo_gateway.app import create_app
from mnemo_gateway.settings import GatewaySettings


def main() -> None:
    follow_parent()
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    start_memory_probe("gateway")
    tend_heap(arenas=settings.malloc_arenas, trim_every=settings.malloc_trim_seconds)
    cert, key = settings.http_tls() or (None, None)
    app = create_app(settings)
    freeze_startup_objects()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
        ssl_certfile=cert,
        ssl_keyfile=key,
    )


if __name__ == "__main__":
    main()

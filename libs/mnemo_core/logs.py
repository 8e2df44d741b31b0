"""One log format for every process of the mesh."""

from __future__ import annotations

import logging
import sys


def configure_logging(service: str, level: str = "INFO") -> None:
    """Logs to stderr as `time level mnemo-<service> logger: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s mnemo-{service} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "anthropic", "alembic.runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""One log format for every process of the mesh: text for a terminal, or JSON lines for a log pipeline.

`MNEMO_LOG_FORMAT=json` (or `log_format = "json"` in the config file) writes one object per line, the same
keys in every process: `time` (UTC, ISO 8601), `level`, `service`, `logger`, `message`, `trace_id` and
`span_id` (of the span current when the line was logged, else null: they join a line to its trace), and
`exception` (the traceback, only when there is one).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["json", "text"]
_NOISY = ("httpx", "httpx2", "httpcore", "openai", "anthropic", "alembic.runtime")


class JsonFormatter(logging.Formatter):
    """A record as one JSON object, with the current span's trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        context = trace.get_current_span().get_span_context()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": format(context.trace_id, "032x") if context.is_valid else None,
            "span_id": format(context.span_id, "016x") if context.is_valid else None,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO", log_format: LogFormat = "text") -> None:
    """Logs to stderr as `time level mnemo-<service> logger: message`, or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(f"mnemo-{service}"))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s mnemo-{service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)

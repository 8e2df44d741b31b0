"""Every process of the mesh logs JSON lines of one schema when MNEMO_LOG_FORMAT=json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mnemo_core.settings import GRPC_SERVICES
from tests.fakes.background import free_port

KEYS = {"time", "level", "service", "logger", "message", "trace_id", "span_id"}
MODULES = {"agent": "mnemo_agent", "memory": "mnemo_memory", "tools": "mnemo_tools", "llm": "mnemo_llm"}


def first_lines(module: str, env: dict[str, str], ready: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Starts `python -m module`, reads its stderr until a line contains `ready`, stops it."""
    process = subprocess.Popen(
        [sys.executable, "-m", module], env=env, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    assert process.stderr is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        for raw in process.stderr:
            lines.append(json.loads(raw))
            if ready in lines[-1]["message"] or time.monotonic() > deadline:
                break
    finally:
        process.terminate()
        process.wait(10)
    return lines


@pytest.mark.parametrize("service", [*GRPC_SERVICES, "gateway"])
def test_each_process_logs_json_lines_of_the_same_schema(service: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNEMO_", "OTEL_"))}
    env.update(
        {
            "MNEMO_HOME": str(tmp_path),
            "MNEMO_LOG_FORMAT": "json",
            "MNEMO_LOG_LEVEL": "INFO",
            "MNEMO_API_KEY": "test-key-0123456789",
            "MNEMO_HTTP_PORT": str(free_port()),
            **{f"MNEMO_{s.upper()}_PORT": str(free_port()) for s in GRPC_SERVICES},
            **{f"MNEMO_{s.upper()}_METRICS_PORT": "0" for s in GRPC_SERVICES},
        }
    )
    if service == "gateway":
        lines = first_lines("mnemo_gateway", env, "Uvicorn running")
    else:
        lines = first_lines(MODULES[service], env, "serving gRPC")

    assert lines, "the process wrote nothing"
    assert all(set(line) == KEYS for line in lines), lines
    assert {line["service"] for line in lines} == {f"mnemo-{service}"}
    assert all(line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} for line in lines)

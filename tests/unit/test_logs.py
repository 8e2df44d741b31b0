"""The log format: JSON lines with one schema in every process, joined to traces by their ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from mnemo_core.logs import configure_logging

KEYS = {"time", "level", "service", "logger", "message", "trace_id", "span_id"}


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_current_spans_trace_and_span_ids(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("memory", "INFO", "json")
    tracer = TracerProvider().get_tracer(__name__)
    log = logging.getLogger("mnemo_memory.blocks")

    log.info("outside %s", "any span")
    with tracer.start_as_current_span("block.append") as span:
        log.warning("appended to %s", "human")
        context = span.get_span_context()
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")

    outside, inside, failed = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert set(outside) == KEYS
    assert outside["trace_id"] is None
    assert outside["span_id"] is None
    assert outside["message"] == "outside any span"
    assert inside == {
        "time": inside["time"],
        "level": "WARNING",
        "service": "mnemo-memory",
        "logger": "mnemo_memory.blocks",
        "message": "appended to human",
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert inside["time"].endswith("+00:00")
    assert set(failed) == {*KEYS, "exception"}
    assert "ValueError: boom" in failed["exception"]


def test_text_is_the_default_format(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("agent")

    logging.getLogger("mnemo_agent").info("ready")

    line = capsys.readouterr().err.strip()
    assert line.endswith(" INFO mnemo-agent mnemo_agent: ready")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)

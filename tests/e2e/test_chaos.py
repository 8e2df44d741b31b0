"""The short form of the chaos harness (`make chaos` runs the full one): a few clients, a few kills of random
services, provider faults, on SQLite and on Postgres; then nothing lost, duplicated, orphaned or stuck."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_turns_survive_killed_services_and_provider_faults(backend: str) -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--backend",
            backend,
            "--clients",
            "8",
            "--duration",
            "20",
            "--kill-every",
            "2.5",
            "--fault-rate",
            "0.06",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = finished.stdout + finished.stderr

    assert finished.returncode == 0, report
    assert "violations   0" in report
    kills = re.search(r"kills\s+(\d+)", report)
    assert kills is not None, report
    assert int(kills.group(1)) >= 2, report  # the chaos happened
    assert re.search(r"restarts\s+[1-9]", report), report
    assert re.search(r"truncate [1-9]", report), report

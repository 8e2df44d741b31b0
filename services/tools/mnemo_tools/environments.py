"""Package environments for custom tools' pip requirements, installed once and cached.

An environment is a directory of installed wheels, keyed by the requirement set and the interpreter,
so tools with the same requirements share it. It is installed by `uv pip install --target` (uv from
the `uv` package or PATH) or, without uv, by `python -m pip install --target`. Only wheels are
accepted: building a source distribution would run its setup code in the service, outside the sandbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from mnemo_core.errors import FieldViolation, InvalidArgument

log = logging.getLogger(__name__)

MAX_REQUIREMENTS = 50


class RequirementsUnavailable(Exception):
    """The requirements could not be installed (reported to the model as a tool error)."""


def check_requirements(requirements: Sequence[str], field: str) -> list[str]:
    """Requirements as stored: PEP 508 names with optional versions, no URLs or pip options."""
    if len(requirements) > MAX_REQUIREMENTS:
        raise InvalidArgument(
            f"{field}: at most {MAX_REQUIREMENTS} requirements",
            violations=[FieldViolation(field, f"at most {MAX_REQUIREMENTS} requirements")],
        )
    cleaned = []
    for i, text in enumerate(requirements):
        path = f"{field}[{i}]"
        problem = ""
        if not text.strip() or len(text) > 200 or text.lstrip().startswith("-"):
            problem = "must be a requirement like 'package==1.2.3' (no pip options)"
        else:
            try:
                requirement = Requirement(text)
            except InvalidRequirement as exc:
                problem = f"is not a valid requirement: {exc}"
            else:
                if requirement.url:
                    problem = "must name a package from the index, not a URL"
        if problem:
            raise InvalidArgument(f"{path} {problem}", violations=[FieldViolation(path, problem)])
        cleaned.append(text.strip())
    return cleaned


def _installer() -> list[str]:
    """The install command prefix: uv (package or PATH), else pip of this interpreter."""
    try:
        from uv import find_uv_bin

        return [find_uv_bin(), "pip", "install", "--python", sys.executable]
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return [found, "pip", "install", "--python", sys.executable]
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]


class PackageEnvironments:
    """Installs and caches requirement sets under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        find_links: Sequence[str] = (),
        index_url: str = "",
        offline: bool = False,
        timeout: float = 300.0,
    ) -> None:
        self._root = root
        self._find_links = [link for link in find_links if link]
        self._index_url = index_url
        self._offline = offline
        self._timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}

    def key(self, requirements: Sequence[str]) -> str:
        """The cache key of a requirement set on this interpreter."""
        identity = {
            "requirements": sorted(requirements),
            "python": sys.version,
            "abi": sys.implementation.name,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    async def site_dir(self, requirements: Sequence[str]) -> str:
        """The directory to import the requirements from, installing them on first use."""
        key = self.key(requirements)
        target = self._root / key
        if (target / ".complete").is_file():
            return str(target)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not (target / ".complete").is_file():
                await self._install(list(requirements), target)
        return str(target)

    async def _install(self, requirements: list[str], target: Path) -> None:
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        command = [*_installer(), "--target", str(staging), "--only-binary", ":all:"]
        for link in self._find_links:
            command += ["--find-links", link]
        if self._index_url:
            command += ["--index-url", self._index_url]
        if self._offline:
            command += ["--offline"] if "uv" in Path(command[0]).name else ["--no-index"]
        command += ["--", *requirements]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            shutil.rmtree(staging, ignore_errors=True)
            raise RequirementsUnavailable(
                f"installing {', '.join(requirements)} took longer than {self._timeout:g} s"
            ) from None
        if process.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = output.decode("utf-8", "replace").strip()[-1500:]
            raise RequirementsUnavailable(f"could not install {', '.join(requirements)}: {tail}")
        # World-readable: the sandbox reads it as an unprivileged user (through an open directory).
        for directory, _, files in os.walk(staging):
            os.chmod(directory, 0o755)  # noqa: S103 - read-only for others, on purpose
            for name in files:
                path = os.path.join(directory, name)
                os.chmod(path, os.stat(path).st_mode | 0o444)
        (staging / ".complete").write_text(json.dumps(requirements))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        log.info("installed tool requirements %s into %s", requirements, target)

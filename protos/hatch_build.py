"""Generates the stubs when a wheel of mnemo-protos is built, so the wheel always matches its .proto files.

They are written to a scratch folder, never into the source tree, and go into the wheel from there. Editable
installs skip this: in a working tree `make proto` writes them (again whenever a .proto changes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class GenerateStubs(BuildHookInterface):  # type: ignore[misc]
    """Runs generate.sh with the build environment's grpcio-tools and mypy-protobuf."""

    PLUGIN_NAME = "custom"
    _scratch: Path | None = None

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "standard":
            return
        self._scratch = Path(tempfile.mkdtemp(prefix="mnemo-protos-"))
        script = str(Path(self.root) / "generate.sh")
        # Our own script, run with the interpreter of the build environment.
        subprocess.run(["bash", script, sys.executable, str(self._scratch)], check=True)  # noqa: S603, S607
        for path in sorted(self._scratch.rglob("*.py*")):
            build_data["force_include"][str(path)] = path.relative_to(self._scratch).as_posix()

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

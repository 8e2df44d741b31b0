"""The contract's generated artefacts: buf.gen.yaml's Python equals protos/generate.sh's, the TypeScript
covers every service, and the API reference in docs/api/ matches the .proto files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "gen"


def _load_api_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "scripts" / "api_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_reference"] = module
    spec.loader.exec_module(module)
    return module


def _stubs(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / "mnemo").rglob("*_pb2*.py*") if p.suffix != ".pyc")


def test_buf_generates_the_same_grpc_stubs_and_type_stubs_as_generate_sh() -> None:
    generated, in_tree = _stubs(GEN / "python"), _stubs(ROOT / "protos")
    assert generated, "gen/python is empty: run `make gen`"
    assert generated == in_tree
    for path in generated:
        # The messages' modules differ only in the file options managed mode adds to their descriptors.
        if not path.name.endswith("_pb2.py"):
            assert (GEN / "python" / path).read_text() == (ROOT / "protos" / path).read_text(), path


def test_typescript_is_generated_for_every_service() -> None:
    services = {
        line.split()[1]
        for proto in (ROOT / "protos").rglob("*.proto")
        for line in proto.read_text().splitlines()
        if line.startswith("service ")
    }
    generated = "\n".join(p.read_text() for p in (GEN / "ts").rglob("*_pb.ts"))
    assert services
    for service in services:
        assert f"export const {service}: GenService<" in generated, service
    assert 'export type ErrorInfo = Message<"google.rpc.ErrorInfo">' in generated


def test_api_reference_in_docs_matches_the_protos() -> None:
    pages = _load_api_reference().render()
    present = {p.name: p.read_text() for p in (ROOT / "docs" / "api").glob("*.md")}
    assert present == pages, "docs/api/ is stale: run `make api-docs`"
    assert "| `StreamMessage` |" in pages["mnemo.agent.v1.md"]
    assert "stream [`StreamMessageResponse`]" in pages["mnemo.agent.v1.md"]

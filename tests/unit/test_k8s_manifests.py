"""The kustomize overlays render, pass Kubernetes schema validation, and wire the mesh consistently."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev-sqlite", "postgres"]
SERVICES = {"agent": 8284, "memory": 8285, "tools": 8286, "llm": 8287}


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_schema_validation(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))

    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(rendered)],
        check=False,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_runs_an_existing_module_on_the_port_the_others_dial(overlay: str) -> None:
    docs = render(overlay)
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    config = by_kind(docs, "ConfigMap")["mnemo-config"]["data"]

    assert set(deployments) == {f"mnemo-{name}" for name in [*SERVICES, "gateway"]}
    for name, port in SERVICES.items():
        container = deployments[f"mnemo-{name}"]["spec"]["template"]["spec"]["containers"][0]
        module = container["args"][0]
        assert importlib.util.find_spec(module) is not None, module
        assert container["ports"][0]["containerPort"] == port
        assert container["readinessProbe"]["grpc"]["port"] == port
        assert services[f"mnemo-{name}"]["spec"]["ports"][0]["port"] == port
        assert config[f"MNEMO_{name.upper()}_ADDR"] == f"mnemo-{name}:{port}"
    assert config["MNEMO_GRPC_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged_with_the_secret_and_the_image(overlay: str) -> None:
    for name, deployment in by_kind(render(overlay), "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"] == "ghcr.io/mnemo-dev/mnemo:0.1.0"
        if name != "mnemo-tools":
            assert {"secretRef": {"name": "mnemo-secrets"}} in container["envFrom"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_tools_pod_gets_only_its_secrets_and_runs_no_stdio_mcp_servers(overlay: str) -> None:
    container = by_kind(render(overlay), "Deployment")["mnemo-tools"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    secrets = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container["env"]
        if "secretKeyRef" in entry.get("valueFrom", {})
    }

    assert all("secretRef" not in source for source in container["envFrom"])
    assert set(secrets) == {"MNEMO_INTERNAL_TOKEN", "MNEMO_DATABASE_URL"}
    assert secrets["MNEMO_DATABASE_URL"]["optional"] is True
    assert {"name": "MNEMO_MCP_STDIO_ENABLED", "value": "false"} in container["env"]
    # The sandbox needs unshare and mount in a user namespace, which the runtime's default profiles forbid;
    # it filters the tool runs' system calls itself.
    assert container["securityContext"]["seccompProfile"] == {"type": "Unconfined"}


def test_sqlite_overlay_gives_each_stateful_service_its_own_volume_and_one_writer() -> None:
    docs = render("dev-sqlite")
    deployments = by_kind(docs, "Deployment")
    claims = by_kind(docs, "PersistentVolumeClaim")

    for name in SERVICES:
        spec = deployments[f"mnemo-{name}"]["spec"]
        data = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "data")
        assert data == {"name": "data", "persistentVolumeClaim": {"claimName": f"mnemo-{name}-data"}}
        assert f"mnemo-{name}-data" in claims
        assert spec["strategy"]["type"] == "Recreate"
        assert spec["replicas"] == 1


def test_postgres_overlay_scales_every_service_out() -> None:
    deployments = by_kind(render("postgres"), "Deployment")

    for name in ("agent", "memory", "tools", "llm", "gateway"):
        assert deployments[f"mnemo-{name}"]["spec"]["replicas"] == 2

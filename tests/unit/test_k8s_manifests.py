"""Every kustomize profile renders and passes strict schema validation, and agrees with what the code reads.

A profile is an overlay (`deploy/k8s/overlays/*`) alone or with an optional component (`deploy/k8s/components/*`
that no overlay includes). The contract half reads the code, not a copy of it: the env names each settings
class accepts, the ports it listens on, the routes the gateway serves, the services `mnemo migrate` knows.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import environment_variables as otel_api_env
from opentelemetry.sdk import environment_variables as otel_sdk_env
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from mnemo_agent.settings import AgentSettings
from mnemo_core.settings import MnemoSettings, ServiceSettings
from mnemo_gateway import http_metrics
from mnemo_gateway.routes import health
from mnemo_gateway.settings import GatewaySettings
from mnemo_llm.settings import LlmSettings
from mnemo_memory.settings import MemorySettings
from mnemo_server.migrate import MIGRATING_SERVICES
from mnemo_tools.settings import ToolsSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if (p / "kustomization.yaml").is_file())
SETTINGS: dict[str, type[MnemoSettings]] = {
    "agent": AgentSettings,
    "memory": MemorySettings,
    "tools": ToolsSettings,
    "llm": LlmSettings,
    "gateway": GatewaySettings,
}
GRPC = ("agent", "memory", "tools", "llm")
# What a service process holds before any cache or tool run (measured: 90-120 MiB RSS at start), with room.
SERVICE_BASELINE_MIB = 256


def _optional_components() -> list[str]:
    """Components no overlay includes: each is rendered on top of every overlay."""
    used: set[str] = set()
    for overlay in OVERLAYS:
        spec = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        used.update(Path(c).name for c in spec.get("components", []))
    return [c for c in COMPONENTS if c not in used]


PROFILES = [*OVERLAYS, *(f"{o}+{c}" for o in OVERLAYS for c in _optional_components())]


@functools.cache
def _rendered(profile: str) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests"
    overlay, _, component = profile.partition("+")
    target = K8S / "overlays" / overlay
    with tempfile.TemporaryDirectory() as scratch:
        if component:
            # The overlay plus the component, in a scratch kustomization (kustomize wants relative paths).
            (Path(scratch) / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [os.path.relpath(target, scratch)],
                        "components": [os.path.relpath(K8S / "components" / component, scratch)],
                    }
                )
            )
            target = Path(scratch)
        return subprocess.run(
            [kubectl, "kustomize", str(target)], check=True, capture_output=True, text=True
        ).stdout


def render(profile: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(_rendered(profile)) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mnemo's Deployments and Jobs: name -> (the service whose settings the container reads, the container)."""
    found = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "otel-collector":
            continue
        service = doc["metadata"]["name"].removeprefix("mnemo-").removesuffix("-migrate")
        assert service in SETTINGS, doc["metadata"]["name"]
        found[doc["metadata"]["name"]] = (service, doc["spec"]["template"]["spec"]["containers"][0])
    return found


def env_names_read_by(settings_cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (upper case; its env is case-insensitive)."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    names = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


OTEL_NAMES = {
    value
    for module in (otel_sdk_env, otel_api_env)
    for key, value in vars(module).items()
    if key.startswith("OTEL_") and isinstance(value, str)
}


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """The container's environment: ConfigMap keys it loads, then its own entries (a value or a valueFrom)."""
    config_maps = by_kind(docs, "ConfigMap")
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, "a whole Secret is loaded: name the keys the container needs"
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def effective_settings(service: str, env: dict[str, Any], tmp_path: Path) -> MnemoSettings:
    """The service's settings as it would read them from the manifest's literal values (secrets left out)."""
    literal = {k: v for k, v in env.items() if isinstance(v, str) and k.startswith("MNEMO_")}
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("MNEMO_", "OPENAI_", "ANTHROPIC_")):
                patch.delenv(key)
        for key, value in literal.items():
            patch.setenv(key, value)
        patch.setenv("MNEMO_CONFIG", str(tmp_path / "no-config.toml"))
        return SETTINGS[service]()


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, quantity
    return int(match[1]) * units[match[2]]


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        entry["name"]: (entry["valueFrom"]["secretKeyRef"]["name"], entry["valueFrom"]["secretKeyRef"]["key"])
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


# --- rendering and schema ------------------------------------------------------------------------------------


def test_every_component_is_rendered_by_some_profile() -> None:
    assert {"dev-sqlite", "postgres"} <= set(OVERLAYS)
    covered = {c for p in PROFILES for c in p.split("+")[1:]}
    for overlay in OVERLAYS:
        spec = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        covered.update(Path(c).name for c in spec.get("components", []))
    assert covered == set(COMPONENTS)


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_passes_strict_schema_validation(profile: str, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(_rendered(profile))

    result = _validate(rendered)

    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_refuses_a_field_kubernetes_does_not_know(tmp_path: Path) -> None:
    docs = render("postgres")
    deployment = by_kind(docs, "Deployment")["mnemo-agent"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": 8284}
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(yaml.safe_dump(deployment))

    assert _validate(rendered).returncode != 0


# --- the contract with the code ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_every_env_name_is_one_the_containers_code_reads(profile: str) -> None:
    docs = render(profile)
    for name, (service, container) in workloads(docs).items():
        env = container_env(docs, container)
        # Names defined only to be substituted into another value, as $(NAME).
        substituted = {
            ref
            for value in env.values()
            if isinstance(value, str)
            for ref in re.findall(r"\$\((\w+)\)", value)
        }
        unknown = set(env) - env_names_read_by(SETTINGS[service]) - OTEL_NAMES - substituted
        assert not unknown, f"{name} sets {sorted(unknown)}, which mnemo-{service} never reads"


@pytest.mark.parametrize("profile", PROFILES)
def test_literal_values_parse_as_the_settings_they_set(profile: str, tmp_path: Path) -> None:
    docs = render(profile)
    for name, (service, container) in workloads(docs).items():
        settings = effective_settings(service, container_env(docs, container), tmp_path)
        assert settings.home == Path("/var/lib/mnemo"), name
        assert str(settings.home) in {m["mountPath"] for m in container["volumeMounts"]}, name


@pytest.mark.parametrize("profile", PROFILES)
def test_ports_probes_and_addresses_match_the_code(profile: str, tmp_path: Path) -> None:
    docs = render(profile)
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    found = workloads(docs)

    assert {n for n in deployments if n != "mnemo-otel-collector"} == {f"mnemo-{s}" for s in SETTINGS}
    for service in GRPC:
        _, container = found[f"mnemo-{service}"]
        settings = effective_settings(service, container_env(docs, container), tmp_path)
        port = settings.port_of(service)
        assert importlib.util.find_spec(container["args"][0]) is not None
        assert container["args"] == [f"mnemo_{service}"]
        metrics = settings.metrics_port_of(service)
        assert metrics > 0
        assert container["ports"] == [
            {"name": "grpc", "containerPort": port},
            {"name": "metrics", "containerPort": metrics},
        ]
        annotations = deployments[f"mnemo-{service}"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert settings.grpc_host == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (service, probe)
        # Clients resolve every pod of a headless Service through gRPC's DNS resolver.
        assert settings.address_of(service) == f"dns:///mnemo-{service}:{port}"
        spec = services[f"mnemo-{service}"]["spec"]
        assert spec["clusterIP"] == "None"
        assert spec["ports"] == [{"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"}]

    _, gateway = found["mnemo-gateway"]
    settings = effective_settings("gateway", container_env(docs, gateway), tmp_path)
    assert isinstance(settings, GatewaySettings)
    assert gateway["args"] == ["mnemo_gateway"]
    assert gateway["ports"] == [{"name": "http", "containerPort": settings.http_port}]
    assert settings.http_host == "0.0.0.0"
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/v1/health", "port": "http"}
    assert "/v1/health" in {getattr(route, "path", None) for route in health.router.routes}
    annotations = deployments["mnemo-gateway"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.http_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert "/metrics" in {getattr(route, "path", None) for route in http_metrics.router.routes}
    assert settings.log_format == "json"
    assert gateway["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert services["mnemo-gateway"]["spec"]["ports"] == [
        {"name": "http", "port": settings.http_port, "targetPort": "http"}
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_each_pod_gets_only_the_secrets_it_needs(profile: str) -> None:
    docs = render(profile)
    uses_database = "postgres" in profile
    for name, (service, container) in workloads(docs).items():
        secrets = secret_refs(container)
        expected = {}
        if name.endswith("-migrate"):
            expected["MNEMO_DATABASE_URL"] = ("mnemo-database", service)
        else:
            expected["MNEMO_INTERNAL_TOKEN"] = ("mnemo-internal", "MNEMO_INTERNAL_TOKEN")
            if uses_database and service in GRPC:
                expected["MNEMO_DATABASE_URL"] = ("mnemo-database", service)
        if service == "gateway":
            expected["MNEMO_API_KEY"] = ("mnemo-gateway", "MNEMO_API_KEY")
        if service == "tools" and not name.endswith("-migrate"):
            expected["MNEMO_SECRETS_KEY"] = ("mnemo-tools", "MNEMO_SECRETS_KEY")
        if service == "llm" and not name.endswith("-migrate"):
            for key in (
                "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY",
                "MNEMO_OPENAI_BASE_URL",
                "MNEMO_ANTHROPIC_BASE_URL",
                "MNEMO_OLLAMA_BASE_URL",
            ):
                expected[key] = ("mnemo-llm-providers", key)
        assert secrets == expected, name
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, name


@pytest.mark.parametrize("profile", PROFILES)
def test_memory_limits_hold_what_the_settings_allow(profile: str, tmp_path: Path) -> None:
    docs = render(profile)
    for name, (service, container) in workloads(docs).items():
        limit = mebibytes(container["resources"]["limits"]["memory"])
        settings = effective_settings(service, container_env(docs, container), tmp_path)
        needed: float = SERVICE_BASELINE_MIB
        if name == "mnemo-memory":
            assert isinstance(settings, MemorySettings)
            # The vector cache, plus one file parse in its child process.
            needed += settings.vector_cache_mb + settings.file_parse_memory_mb
        elif name == "mnemo-tools":
            assert isinstance(settings, ToolsSettings)
            needed += settings.sandbox_concurrency * settings.sandbox_memory_mb
        assert limit >= needed, f"{name}: limit {limit} MiB < {needed} MiB the settings allow"
        assert mebibytes(container["resources"]["requests"]["memory"]) <= limit
        assert "cpu" in container["resources"]["requests"], name


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_run_unprivileged_from_the_right_image(profile: str) -> None:
    for name, (_service, container) in workloads(render(profile)).items():
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # The embedding weights are only in the llm-gateway's image.
        image = "mnemo-llm" if name == "mnemo-llm" else "mnemo"
        assert container["image"] == f"ghcr.io/mnemo-dev/{image}:0.1.0", name
    for doc in render(profile):
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0


@pytest.mark.parametrize("profile", PROFILES)
def test_the_tools_pod_runs_no_stdio_mcp_servers_and_filters_its_own_syscalls(profile: str) -> None:
    container = by_kind(render(profile), "Deployment")["mnemo-tools"]["spec"]["template"]["spec"][
        "containers"
    ][0]

    assert {"name": "MNEMO_MCP_STDIO_ENABLED", "value": "false"} in container["env"]
    # The sandbox needs unshare and mount in a user namespace, which the runtime's default profiles forbid;
    # it filters the tool runs' system calls itself.
    assert container["securityContext"]["seccompProfile"] == {"type": "Unconfined"}


# --- migrations ---------------------------------------------------------------------------------------------


def test_sqlite_services_migrate_at_start_one_writer_each_on_its_own_volume(tmp_path: Path) -> None:
    docs = render("dev-sqlite")
    deployments = by_kind(docs, "Deployment")
    claims = by_kind(docs, "PersistentVolumeClaim")

    assert by_kind(docs, "Job") == {}
    for name in GRPC:
        spec = deployments[f"mnemo-{name}"]["spec"]
        container = spec["template"]["spec"]["containers"][0]
        data = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "data")
        assert data == {"name": "data", "persistentVolumeClaim": {"claimName": f"mnemo-{name}-data"}}
        assert f"mnemo-{name}-data" in claims
        assert spec["strategy"]["type"] == "Recreate"
        assert spec["replicas"] == 1
        settings = effective_settings(name, container_env(docs, container), tmp_path)
        assert isinstance(settings, ServiceSettings)
        assert settings.migrate is True


def test_postgres_migrates_in_a_job_per_service_and_the_services_wait_for_it(tmp_path: Path) -> None:
    docs = render("postgres")
    jobs = by_kind(docs, "Job")
    deployments = by_kind(docs, "Deployment")

    assert set(jobs) == {f"mnemo-{s}-migrate" for s in MIGRATING_SERVICES}
    assert set(MIGRATING_SERVICES) == set(GRPC)
    for service in GRPC:
        job = jobs[f"mnemo-{service}-migrate"]["spec"]
        container = job["template"]["spec"]["containers"][0]
        assert container["command"] == ["mnemo", "migrate", service]
        assert job["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")

        container = deployments[f"mnemo-{service}"]["spec"]["template"]["spec"]["containers"][0]
        settings = effective_settings(service, container_env(docs, container), tmp_path)
        assert isinstance(settings, ServiceSettings)
        assert settings.migrate is False
        # The service gives up waiting (with a message) before the kubelet's startup probe kills it.
        probe = container["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] > settings.schema_wait_seconds


# --- availability and exposure --------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_autoscalers_budgets_and_spread_cover_the_right_deployments(profile: str) -> None:
    docs = render(profile)
    deployments = {n: d for n, d in by_kind(docs, "Deployment").items() if n != "mnemo-otel-collector"}
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    budgets = by_kind(docs, "PodDisruptionBudget")
    scaled = {"mnemo-gateway"} | ({f"mnemo-{s}" for s in GRPC} if "postgres" in profile else set())

    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == scaled
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        if name in scaled:
            assert "replicas" not in spec, f"{name}: the autoscaler owns the replica count"
            assert hpas[name]["spec"]["minReplicas"] >= 2
        budget = budgets[name]["spec"]
        assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
        spread = spec["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_ingress_serves_the_gateway_over_tls_as_long_and_large_as_the_api_allows(profile: str) -> None:
    docs = render(profile)
    (ingress,) = by_kind(docs, "Ingress").values()
    spec = ingress["spec"]
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    annotations = ingress["metadata"]["annotations"]

    assert spec["tls"][0]["secretName"]
    assert set(spec["tls"][0]["hosts"]) == {rule["host"] for rule in spec["rules"]}
    assert backend["name"] == "mnemo-gateway"
    assert backend["port"]["name"] in {
        p["name"] for p in by_kind(docs, "Service")["mnemo-gateway"]["spec"]["ports"]
    }
    assert (
        int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        >= GatewaySettings().http_request_timeout
    )
    body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert mebibytes(body.replace("m", "Mi")) * 1024 * 1024 >= MemorySettings().max_upload_bytes
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.endswith("+otel-collector")])
def test_the_otel_component_points_every_process_at_its_collector(profile: str) -> None:
    docs = render(profile)
    collector = by_kind(docs, "Service")["mnemo-otel-collector"]
    ports = {p["name"]: p["port"] for p in collector["spec"]["ports"]}

    for name, (_, container) in workloads(docs).items():
        env = container_env(docs, container)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://mnemo-otel-collector:{ports['otlp-http']}", name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert "k8s.pod.name=$(K8S_POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]
        assert env["K8S_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}

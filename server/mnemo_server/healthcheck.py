"""The image's HEALTHCHECK: is the mnemo service this container runs serving?

`python -m mnemo_server.healthcheck [service]`. Without an argument, the service is read from the container's
main process (`python -m mnemo_<service>`, PID 1, or its child under an init such as `docker run --init`;
`MNEMO_HEALTHCHECK_PID` names another process). A gRPC service is healthy when `grpc.health.v1` says SERVING,
the REST gateway when `GET /v1/health` answers 200 (every service behind it serving). Exit 0: healthy, or
nothing to check (the process is no mnemo service, e.g. a one-shot `mnemo migrate`); 1: unhealthy (Docker
reserves 2). Kubernetes ignores it: the manifests have their own probes.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

SERVICES = ("agent", "memory", "tools", "llm", "gateway")
TIMEOUT_SECONDS = 4.0


def _command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def service_of(pid: int) -> str | None:
    """The mnemo service process `pid` (or one of its children) runs, if any."""
    for candidate in (pid, *_children(pid)):
        args = _command_line(candidate)
        for flag, module in itertools.pairwise(args):
            name = module.removeprefix("mnemo_")
            if flag == "-m" and module.startswith("mnemo_") and name in SERVICES:
                return name
    return None


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - the wildcard is not dialled


def check(service: str) -> tuple[bool, str]:
    """Whether `service`, as this container's settings configure it, is serving; and what was seen."""
    if service == "gateway":
        import httpx

        from mnemo_gateway.settings import GatewaySettings

        gateway = GatewaySettings()
        url = f"http://{_local(gateway.http_host)}:{gateway.http_port}/v1/health"
        try:
            response = httpx.get(url, timeout=TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            return False, f"{url}: {exc}"
        return response.status_code == 200, f"{url}: {response.status_code} {response.text}"

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from mnemo_core.settings import GRPC_SERVICES, MnemoSettings

    settings = MnemoSettings()
    port = next(settings.port_of(name) for name in GRPC_SERVICES if name == service)
    address = f"{_local(settings.grpc_host)}:{port}"
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            return False, f"{address}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status == "SERVING", f"{address}: {status}"


def main(argv: list[str]) -> int:
    service = argv[0] if argv else service_of(int(os.environ.get("MNEMO_HEALTHCHECK_PID", "1")))
    if service is None:
        print("no mnemo service runs in this container: nothing to check")
        return 0
    if service not in SERVICES:
        print(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
        return 1
    healthy, seen = check(service)
    print(f"mnemo-{service} {'healthy' if healthy else 'unhealthy'}: {seen}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

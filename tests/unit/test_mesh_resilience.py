"""The retry policy names real idempotent methods; restarts back off; 503/429 and a key's running run carry
Retry-After."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
from google.protobuf import descriptor_pool

import mnemo
from mnemo_core import errors
from mnemo_core.channels import _OPTIONS
from mnemo_core.retries import IDEMPOTENT_METHODS, RETRY_SERVICE_CONFIG
from mnemo_gateway.errors import http_status, retry_after
from mnemo_server.supervisor import RestartPolicy, exit_cause


def _load_every_stub() -> None:
    for module in pkgutil.walk_packages(mnemo.__path__, "mnemo."):
        if module.name.endswith("_pb2"):
            importlib.import_module(module.name)
    importlib.import_module("grpc_health.v1.health_pb2")


def test_every_method_the_retry_policy_names_exists_and_only_reads_are_retried() -> None:
    _load_every_stub()
    pool = descriptor_pool.Default()
    for service, methods in IDEMPOTENT_METHODS.items():
        descriptor = pool.FindServiceByName(service)
        for method in methods:
            assert descriptor.methods_by_name[method].name == method
            pure = service == "mnemo.llm.v1.LlmService" and method in ("Embed", "CountTokens")
            reads = ("Get", "List", "BatchGet", "Search", "Export", "Authenticate", "Check", "Summarize")
            assert pure or method.startswith(reads)
    names = {(n["service"], n["method"]) for n in json.loads(RETRY_SERVICE_CONFIG)["methodConfig"][0]["name"]}
    assert ("mnemo.agent.v1.AgentService", "SendMessage") not in names
    assert ("mnemo.memory.v1.MessageService", "AppendMessages") not in names
    assert dict(_OPTIONS)["grpc.service_config"] == RETRY_SERVICE_CONFIG


def test_restarts_back_off_doubling_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay=0.25, max_delay=2.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_the_exit_cause_names_the_signal_or_the_code() -> None:
    assert exit_cause(-9) == "killed by SIGKILL"
    assert exit_cause(-15) == "killed by SIGTERM"
    assert exit_cause(3) == "exited with code 3"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errors.Unavailable("memory is restarting", reason="SERVICE_UNAVAILABLE"), "1"),
        (errors.Unavailable("provider down", metadata={"retry_after_seconds": "4.200"}), "5"),
        (errors.ResourceExhausted("slow down", metadata={"retry_after_seconds": "2.000"}), "2"),
        (errors.ResourceExhausted("slow down"), "1"),
        (errors.Unavailable("no provider", reason="LLM_PROVIDER_NOT_CONFIGURED"), None),
        (errors.Aborted("the key's run is still going", reason="RUN_IN_PROGRESS"), "1"),
        (errors.Aborted("stale version", reason="VERSION_MISMATCH"), None),
        (errors.NotFound("gone"), None),
    ],
)
def test_retry_after_is_set_on_passing_failures_only(error: errors.MnemoError, expected: str | None) -> None:
    assert retry_after(error, http_status(error)) == expected

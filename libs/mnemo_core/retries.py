"""Which mesh calls gRPC retries by itself: reads, on UNAVAILABLE, for about as long as a restart takes.

A read may run twice without harm, so a call that finds its peer restarting (connection refused, or the
peer going away mid-call) is sent again after a backoff instead of failing the request. Writes are not
retried here: the ones a client may repeat carry an idempotency key, and the client repeats them.
"""

from __future__ import annotations

import json
from typing import Any

# Reads of each service (idempotent: no state changes, the same answer twice).
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = {
    "mnemo.agent.v1.AgentService": ("GetAgent", "ListAgents", "GetAgentContext", "ExportAgent"),
    "mnemo.agent.v1.RunService": ("GetRun", "ListRuns", "ListRunMessages"),
    "mnemo.agent.v1.IdentityService": (
        "GetOrganization",
        "ListOrganizations",
        "GetUser",
        "ListUsers",
        "GetApiKey",
        "ListApiKeys",
        "AuthenticateApiKey",
    ),
    "mnemo.agent.v1.EndUserService": ("GetEndUser", "ListEndUsers"),
    "mnemo.agent.v1.GroupService": ("GetGroup", "ListGroups", "GetGroupRun", "ListGroupRuns", "ExportGroup"),
    "mnemo.agent.v1.BatchService": ("GetBatch",),
    "mnemo.llm.v1.LlmService": ("Embed", "CountTokens", "ListModels", "SummarizeUsage", "GetChatBatch"),
    "mnemo.tools.v1.ToolService": ("GetTool", "BatchGetTools", "ListTools", "GetToolEnvironment"),
    "mnemo.tools.v1.McpService": ("GetMcpServer", "ListMcpServers"),
    "mnemo.memory.v1.BlockService": ("GetBlock", "ListBlocks", "ListBlockVersions"),
    "mnemo.memory.v1.PassageService": ("GetPassage", "ListPassages", "SearchPassages"),
    "mnemo.memory.v1.MessageService": ("ListMessages", "GetContextWindow", "SearchMessages"),
    "mnemo.memory.v1.SourceService": ("GetSource", "ListSources", "GetFile", "ListFiles", "GetJob"),
    "grpc.health.v1.Health": ("Check",),
}

# Five attempts (gRPC's cap) 0.2, 0.4, 0.8 and 1.6 s apart at most (gRPC draws each backoff at random
# below its bound): about what a supervisor needs to restart a killed service.
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "1.6s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def retry_service_config() -> dict[str, Any]:
    """The gRPC service config that retries the idempotent methods."""
    return {
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in IDEMPOTENT_METHODS.items()
                    for method in methods
                ],
                "retryPolicy": RETRY_POLICY,
            }
        ]
    }


RETRY_SERVICE_CONFIG = json.dumps(retry_service_config())

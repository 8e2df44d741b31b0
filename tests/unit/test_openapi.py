"""The gateway's OpenAPI document and docs pages: what a client generator and a browser get."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mnemo_gateway.app import create_app
from mnemo_gateway.openapi import OPERATION_IDS
from mnemo_gateway.settings import GatewaySettings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(GatewaySettings(api_key="unused")).openapi()


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for ops in document["paths"].values() for op in ops.values()}


def test_every_operation_has_a_stable_resource_verb_id_from_the_table(document: dict[str, Any]) -> None:
    ids = list(_operations(document))

    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)+", op_id) for op_id in ids), ids
    assert set(ids) <= set(OPERATION_IDS.values()), set(ids) - set(OPERATION_IDS.values())
    assert {"agents_create", "agents_list", "agents_get", "agents_messages_stream", "sources_upload"} <= set(
        ids
    )


def test_the_bearer_key_is_the_security_scheme_of_everything_but_health(document: dict[str, Any]) -> None:
    operations = _operations(document)

    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["security"] == [{"bearerAuth": []}]
    assert operations["health_get"]["security"] == []
    assert "security" not in operations["agents_create"]


def test_listings_that_page_declare_the_next_page_header(document: dict[str, Any]) -> None:
    operations = _operations(document)
    paged = {
        op_id
        for op_id, op in operations.items()
        if any(p["name"] == "page_token" for p in op.get("parameters", []))
    }

    assert {"agents_list", "runs_list", "sources_list", "api_keys_list"} <= paged
    for op_id in paged:
        headers = operations[op_id]["responses"]["200"]["headers"]
        assert headers["X-Next-Page-Token"]["schema"] == {"type": "string"}, op_id
    assert "headers" not in operations["agents_get"]["responses"]["200"]


def test_streamed_turns_document_each_event_and_the_error_event(document: dict[str, Any]) -> None:
    operations = _operations(document)
    schema = operations["agents_messages_stream"]["responses"]["200"]["content"]["text/event-stream"][
        "schema"
    ]
    events, error = schema["oneOf"]

    assert error == {"$ref": "#/components/schemas/ErrorBody"}
    assert set(events["discriminator"]["mapping"]) == {
        "user_message",
        "system_message",
        "assistant_message",
        "reasoning_message",
        "tool_call_message",
        "tool_return_message",
        "event_message",
        "assistant_message_delta",
        "reasoning_message_delta",
        "stop_reason",
        "usage_statistics",
    }
    for ref in events["discriminator"]["mapping"].values():
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]
    group = operations["groups_messages_stream"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert "member_turn" in group["oneOf"][0]["discriminator"]["mapping"]


def test_docs_pages_load_swagger_ui_and_redoc_from_the_gateway_itself() -> None:
    client = TestClient(create_app(GatewaySettings(api_key="unused")))

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "https://" not in html, page  # nothing fetched from elsewhere
        scripts = re.findall(r'src="([^"]+\.js)"', html)
        assert scripts, page
        assert all(s.startswith("/docs/assets/") for s in scripts), scripts
        for script in scripts:
            asset = client.get(script)
            assert asset.status_code == 200
            assert len(asset.content) > 500_000  # the whole bundle, not a placeholder
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_cors_is_off_by_default_and_allows_only_the_configured_origins() -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    closed = TestClient(create_app(GatewaySettings(api_key="unused")))
    assert "access-control-allow-origin" not in closed.options("/v1/agents", headers=preflight).headers

    opened = TestClient(create_app(GatewaySettings(api_key="unused", cors_origins=["https://app.example"])))
    allowed = opened.options(
        "/v1/agents", headers=preflight | {"Access-Control-Request-Headers": "authorization"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = opened.options("/v1/agents", headers=preflight | {"Origin": "https://evil.example"})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    listed = opened.get("/openapi.json", headers={"Origin": "https://app.example"})
    assert "X-Next-Page-Token" in listed.headers["access-control-expose-headers"]

"""The OpenAPI document clients generate code from, and the pages that show it (/docs, /redoc).

FastAPI's defaults are made usable here, in one place: stable operation ids (`agents_create`), the bearer key
as a security scheme (the Authorize button; generated clients send the key), the `X-Next-Page-Token` header
declared on every listing that pages, the Server-Sent Events of streamed turns as schemas, and Swagger UI and
ReDoc served from files in the `fastapi-offline` wheel instead of a CDN (docs/adr/0600).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter

from mnemo.rest.common import ErrorBody
from mnemo.rest.groups import GroupStreamEvent
from mnemo.rest.messages import StreamEvent

ASSETS_PATH = "/docs/assets"
BEARER_SCHEME = "bearerAuth"
NEXT_PAGE_HEADER = "X-Next-Page-Token"
# Routes anyone may call: no key is asked for.
PUBLIC_OPERATIONS = frozenset({"health_get"})

# The operation id of each route, by its function's name: `<resource>_<verb>`, the names generated clients
# get as method names. An id is part of the contract: renaming a route's function must not change it.
OPERATION_IDS: dict[str, str] = {
    "health": "health_get",
    # agents
    "create_agent": "agents_create",
    "list_agents": "agents_list",
    "get_agent": "agents_get",
    "update_agent": "agents_update",
    "delete_agent": "agents_delete",
    "import_agent": "agents_import",
    "export_agent": "agents_export",
    "get_agent_context": "agents_context",
    "summarize": "agents_summarize",
    "recompile": "agents_recompile",
    "send_ephemeral_message": "agents_messages_ephemeral",
    "send_message": "agents_messages_send",
    "stream_message": "agents_messages_stream",
    "send_message_async": "agents_messages_send_async",
    "list_messages": "agents_messages_list",
    "search_messages": "agents_messages_search",
    # core memory
    "list_core_memory_blocks": "agents_core_memory_blocks_list",
    "get_core_memory_block": "agents_core_memory_blocks_get",
    "update_core_memory_block": "agents_core_memory_blocks_update",
    "attach_block": "agents_core_memory_blocks_attach",
    "detach_block": "agents_core_memory_blocks_detach",
    # archival memory
    "list_passages": "agents_archival_memory_list",
    "insert_passage": "agents_archival_memory_insert",
    "search_passages": "agents_archival_memory_search",
    "delete_passage": "agents_archival_memory_delete",
    # agent tools and sources
    "list_agent_tools": "agents_tools_list",
    "attach_tool": "agents_tools_attach",
    "detach_tool": "agents_tools_detach",
    "get_tool_environment": "agents_tool_environment_get",
    "update_tool_environment": "agents_tool_environment_update",
    "list_agent_sources": "agents_sources_list",
    "attach_source": "agents_sources_attach",
    "detach_source": "agents_sources_detach",
    # groups
    "create_group": "groups_create",
    "list_groups": "groups_list",
    "get_group": "groups_get",
    "delete_group": "groups_delete",
    "import_group": "groups_import",
    "export_group": "groups_export",
    "send_group_message": "groups_messages_send",
    "stream_group_message": "groups_messages_stream",
    "list_group_runs": "groups_runs_list",
    "get_group_run": "groups_runs_get",
    "cancel_group_run": "groups_runs_cancel",
    # tools
    "create_tool": "tools_create",
    "list_tools": "tools_list",
    "get_tool": "tools_get",
    "update_tool": "tools_update",
    "delete_tool": "tools_delete",
    "run_tool": "tools_run",
    # MCP servers
    "create_mcp_server": "mcp_servers_create",
    "list_mcp_servers": "mcp_servers_list",
    "get_mcp_server": "mcp_servers_get",
    "delete_mcp_server": "mcp_servers_delete",
    "refresh_mcp_server": "mcp_servers_refresh",
    "list_mcp_server_tools": "mcp_servers_tools_list",
    # runs and batches
    "list_runs": "runs_list",
    "get_run": "runs_get",
    "list_run_messages": "runs_messages_list",
    "cancel_run": "runs_cancel",
    "approve_run": "runs_approve",
    "create_batch": "batches_create",
    "get_batch": "batches_get",
    # blocks
    "create_block": "blocks_create",
    "list_blocks": "blocks_list",
    "list_templates": "blocks_templates_list",
    "get_block": "blocks_get",
    "update_block": "blocks_update",
    "delete_block": "blocks_delete",
    "list_block_history": "blocks_history_list",
    "undo_block_edit": "blocks_undo",
    "redo_block_edit": "blocks_redo",
    "restore_block_version": "blocks_restore",
    # sources
    "create_source": "sources_create",
    "list_sources": "sources_list",
    "get_source": "sources_get",
    "update_source": "sources_update",
    "delete_source": "sources_delete",
    "upload_file": "sources_upload",
    "list_files": "sources_files_list",
    "get_file": "sources_files_get",
    "delete_file": "sources_files_delete",
    "list_source_passages": "sources_passages_list",
    "get_job": "jobs_get",
    # models and usage
    "list_models": "models_list",
    "usage": "usage_get",
    # identity: organizations, users, API keys
    "create_organization": "organizations_create",
    "list_organizations": "organizations_list",
    "get_organization": "organizations_get",
    "delete_organization": "organizations_delete",
    "create_user": "users_create",
    "list_users": "users_list",
    "get_user": "users_get",
    "delete_user": "users_delete",
    "create_api_key": "api_keys_create",
    "list_api_keys": "api_keys_list",
    "get_api_key": "api_keys_get",
    "revoke_api_key": "api_keys_revoke",
    # audit log
    "list_audit_events": "audit_events_list",
    # identities (end users)
    "create_identity": "identities_create",
    "list_identities": "identities_list",
    "get_identity": "identities_get",
    "update_identity": "identities_update",
    "delete_identity": "identities_delete",
    "list_identity_agents": "identities_agents_list",
    "attach_identity_agent": "identities_agents_attach",
    "detach_identity_agent": "identities_agents_detach",
    "attach_identity_block": "identities_blocks_attach",
    "detach_identity_block": "identities_blocks_detach",
}

# The events each streaming operation sends, one per `data:` line.
STREAM_EVENTS: dict[str, TypeAdapter[Any]] = {
    "agents_messages_stream": TypeAdapter(StreamEvent),
    "groups_messages_stream": TypeAdapter(GroupStreamEvent),
}


def operation_id(route: APIRoute) -> str:
    """The route's stable id; a route missing from the table gets `<first path segment>_<function name>`."""
    if route.name in OPERATION_IDS:
        return OPERATION_IDS[route.name]
    segments = [s for s in route.path.split("/") if s and s != "v1" and not s.startswith("{")]
    resource = segments[0].replace("-", "_") if segments else "root"
    return f"{resource}_{route.name}"


def _schema_ref(adapter: TypeAdapter[Any], components: dict[str, Any]) -> dict[str, Any]:
    """The adapter's JSON schema with its models added to the document's components (existing ones kept)."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


def _document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: the one `mnemo server` prints, or one created at POST /v1/api-keys.",
        }
    }
    document["security"] = [{BEARER_SCHEME: []}]
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            op_id = operation.get("operationId", "")
            if op_id in PUBLIC_OPERATIONS:
                operation["security"] = []
            params = operation.get("parameters", [])
            if any(p.get("name") == "page_token" and p.get("in") == "query" for p in params):
                ok = operation.get("responses", {}).get("200")
                if ok is not None:
                    ok.setdefault("headers", {})[NEXT_PAGE_HEADER] = {
                        "description": "The `page_token` of the next page; absent on the last page.",
                        "schema": {"type": "string"},
                    }
            if op_id in STREAM_EVENTS:
                event = _schema_ref(STREAM_EVENTS[op_id], schemas)
                operation["responses"]["200"] = {
                    "description": (
                        "Server-Sent Events: one `data: <JSON>` line per event, each one of the schemas below; "
                        "an `ErrorBody` event reports a failure after the stream began; `data: [DONE]` ends it."
                    ),
                    "content": {"text/event-stream": {"schema": {"oneOf": [event, error_ref]}}},
                }
    return document


def install(app: FastAPI) -> None:
    """Serves the customized document at /openapi.json and the docs pages from packaged files.

    The app must be created with `docs_url=None, redoc_url=None` and `generate_unique_id_function=operation_id`.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

"""Agent files over REST: reading one from a request (JSON body or multipart `file`), within a size cap.

The routes are `GET /v1/agents/{id}/export`, `POST /v1/agents/import` (routes/agents.py) and their group
counterparts (routes/groups.py); the agent service checks and imports the file itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from mnemo.rest.agent_files import AgentFile
from mnemo_core.errors import InvalidArgument

# A file travels to the agent service in one gRPC message (64 MB at most); the service applies its own cap.
MAX_AGENT_FILE_BYTES = 60 * 1024 * 1024

AGENT_FILE_RESPONSE: dict[str, Any] = {
    "description": "The agent file (docs/schemas/agent-file.v1.json).",
    "content": {
        "application/json": {
            "schema": AgentFile.model_json_schema(ref_template="#/components/schemas/{model}")
        }
    },
}
AGENT_FILE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object", "description": "An agent file, any version."}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


def _too_large() -> InvalidArgument:
    return InvalidArgument(
        f"the agent file is larger than {MAX_AGENT_FILE_BYTES} bytes",
        reason="AGENT_FILE_TOO_LARGE",
        metadata={"max_bytes": str(MAX_AGENT_FILE_BYTES)},
    )


async def agent_file_of(request: Request) -> str:
    """The agent file a request carries: its JSON body, or the multipart part named `file`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_AGENT_FILE_BYTES + 64 * 1024:
        raise _too_large()
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=1, max_part_size=MAX_AGENT_FILE_BYTES)
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidArgument(
                "send the agent file as the multipart part 'file'", reason="AGENT_FILE_MISSING"
            )
        content = await part.read(MAX_AGENT_FILE_BYTES + 1)
    else:
        content = b""
        async for chunk in request.stream():
            content += chunk
            if len(content) > MAX_AGENT_FILE_BYTES:
                raise _too_large()
    if len(content) > MAX_AGENT_FILE_BYTES:
        raise _too_large()
    try:
        return content.decode()
    except UnicodeDecodeError:
        raise InvalidArgument("the agent file is not UTF-8 text", reason="AGENT_FILE_INVALID") from None

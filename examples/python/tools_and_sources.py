"""Custom tools, tool secrets, files for agents to search (with upload progress), and token usage.

Run against a server started with `make run`:  .venv/bin/python examples/python/tools_and_sources.py
"""

from __future__ import annotations

import os
import textwrap
import uuid

from mnemo.client import Mnemo

MODEL = os.environ.get("MNEMO_MODEL", "openai/gpt-4o-mini")
TOOL_NAME = f"weather_{uuid.uuid4().hex[:6]}"  # tool names are unique per organization
TOOL_SOURCE = textwrap.dedent(
    f'''
    import os

    def {TOOL_NAME}(city: str) -> str:
        """Today's weather in a city.

        Args:
            city: The city.
        """
        return f"{{city}}: sunny (station {{os.environ.get('STATION', 'unknown')}})"
    '''
)

with Mnemo() as client:
    # A tool is one typed, documented Python function; its JSON schema comes from the signature.
    tool = client.tools.create(TOOL_SOURCE, tags=["example"])
    print(f"tool {tool.name}: parameters {list(tool.json_schema['properties'])}")
    print(f"direct run: {client.tools.run(tool.id, {'city': 'Oslo'}).content}")

    agent = client.agents.create(name="tools-example", model=MODEL, tool_ids=[tool.id])
    # Secrets for the agent's tools: set by name, never returned.
    client.tool_environments.update(agent.id, set={"STATION": "OSL-1"})
    print(f"tool environment: {client.tool_environments.get(agent.id).names}")
    print(f"as the agent: {client.tools.run(tool.id, {'city': 'Oslo'}, agent_id=agent.id).content}")

    # Files become passages the agent can search; the upload reports its progress, then a job chunks them.
    source = client.sources.create(f"handbook-{uuid.uuid4().hex[:6]}", description="Team handbook")
    text = "Deploys happen on Tuesdays. On-call rotates weekly. " * 200
    upload = client.sources.upload(
        source.id,
        text.encode(),
        file_name="handbook.md",
        content_type="text/markdown",
        progress=lambda sent, total: print(f"\ruploaded {sent}/{total} bytes", end=""),
    )
    print()
    job = client.sources.wait_job(upload.job.id)
    print(f"processed: {job.status}, {job.chunks_done} chunks")
    client.sources.attach(agent.id, source.id)

    client.messages.send(agent.id, "When do deploys happen?")
    for row in client.usage.get(group_by=["agent"], agent_id=agent.id):
        print(f"usage: {row.request_count} calls, {row.total_tokens} tokens")
    print(f"models: {[m.name for m in client.models.list().models][:3]}")

    client.agents.delete(agent.id)
    client.sources.delete(source.id)
    client.tools.delete(tool.id)

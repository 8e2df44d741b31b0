"""The Python client in five minutes: an agent with memory, a turn, a streamed turn, archival memory, paging.

Run against a server started with `make run`:  .venv/bin/python examples/python/quickstart.py
(`MNEMO_BASE_URL` and `MNEMO_API_KEY` choose another server; `MNEMO_MODEL` another model.)
"""

from __future__ import annotations

import os

from mnemo.client import Mnemo, NotFound
from mnemo.client.models import AssistantMessage, ContentDelta, ToolCallMessage, ToolReturnMessage

MODEL = os.environ.get("MNEMO_MODEL", "openai/gpt-4o-mini")

with Mnemo() as client:
    # An agent with two core memory blocks: always in its context, edited by the agent itself.
    agent = client.agents.create(
        name="quickstart",
        model=MODEL,
        memory_blocks=[
            {"label": "persona", "value": "I am a concise assistant."},
            {"label": "human", "value": ""},
        ],
        tags=["quickstart"],
    )
    print(f"created {agent.id} with blocks {[b.label for b in agent.blocks]}")

    # One turn; the answer holds every message the turn stored (tool calls too), the stop reason and usage.
    result = client.messages.send(agent.id, "Hi, my name is Ada.")
    for message in result.messages:
        if isinstance(message, AssistantMessage):
            print(f"agent: {message.content}")
        elif isinstance(message, ToolCallMessage):
            print(f"  -> {message.tool_call.name}({message.tool_call.arguments})")
    print(f"stop: {result.stop_reason.stop_reason}, tokens: {result.usage.total_tokens}")
    print(f"core memory 'human': {client.blocks.get(agent.id, 'human').value!r}")

    # A streamed turn: typed events, token deltas as the model writes them.
    print("agent (streamed): ", end="")
    with client.messages.stream(agent.id, "What is my name?", stream_tokens=True) as events:
        for event in events:
            if isinstance(event, ContentDelta):
                print(event.content, end="", flush=True)
            elif isinstance(event, ToolReturnMessage):
                print(f"[{event.status}]", end="")
    print()

    # Archival memory: long-term, searched by meaning and words.
    client.archival.insert(agent.id, "The launch moved to Tuesday, 10:00 UTC.")
    for hit in client.archival.search(agent.id, "when is the launch?", top_k=1).results:
        print(f"archival: {hit.passage.text} (score {hit.score.score:.2f})")

    # Listings are pages; auto_paging_iter() follows X-Next-Page-Token for you.
    first = client.agents.list(limit=1, tags=["quickstart"])
    print(f"quickstart agents: {sum(1 for _ in first.auto_paging_iter())}")

    # Per-request options and the raw HTTP response when you need headers.
    raw = client.with_options(timeout=10, max_retries=0).with_raw_response.agents.get(agent.id)
    print(f"GET agent: HTTP {raw.status_code}, {raw.parsed.name}")

    client.agents.delete(agent.id)
    try:
        client.agents.get(agent.id)
    except NotFound as exc:
        print(f"deleted: {exc.reason or exc.status}")

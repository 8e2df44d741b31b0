"""/v1/agents/{id}/archival-memory and /v1/agents/{id}/messages/search: long-term memory and recall."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.memory.v1 import passage_pb2
from mnemo.rest.archival import Passage, PassageCreate, PassageHit, PassageSearchResult
from mnemo.rest.messages import MessageSearchResult
from mnemo_core.wire import to_struct
from mnemo_gateway import memory_convert as mc
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/agents", tags=["archival memory"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]
Mode = Literal["hybrid", "vector", "keyword"]


@router.get("/{agent_id}/archival-memory", response_model=list[Passage])
async def list_passages(
    agent_id: str,
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
    order: Literal["asc", "desc"] = "asc",
) -> list[Passage]:
    """Lists the agent's own passages; `X-Next-Page-Token` continues the listing."""
    await mesh.agent(agent_id)
    page = await mesh.passages.ListPassages(
        passage_pb2.ListPassagesRequest(
            agent_id=agent_id,
            page_size=limit,
            page_token=page_token,
            order=passage_pb2.PASSAGE_ORDER_DESCENDING
            if order == "desc"
            else passage_pb2.PASSAGE_ORDER_ASCENDING,
        )
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [mc.passage_out(p) for p in page.passages]


@router.post("/{agent_id}/archival-memory", status_code=status.HTTP_201_CREATED, response_model=list[Passage])
async def insert_passage(agent_id: str, body: PassageCreate, mesh: Mesh) -> list[Passage]:
    """Stores text in the agent's archival memory, embedded with the agent's model; long text is split."""
    agent = await mesh.agent(agent_id)
    created = await mesh.passages.CreatePassages(
        passage_pb2.CreatePassagesRequest(
            agent_id=agent_id,
            text=body.text,
            tags=body.tags,
            metadata=to_struct(body.metadata),
            speaker=body.speaker,
            create_time=mc.timestamp(body.created_at),
            embedding_model=agent.embedding_model,
        )
    )
    return [mc.passage_out(p) for p in created.passages]


@router.get("/{agent_id}/archival-memory/search", response_model=PassageSearchResult)
async def search_passages(
    agent_id: str,
    mesh: Mesh,
    query: Annotated[str, Query(min_length=1, max_length=10_000)],
    top_k: Annotated[int, Query(ge=1, le=100)] = 10,
    tags: Annotated[list[str] | None, Query()] = None,
    tag_match: Literal["any", "all"] = "any",
    start: datetime | None = None,
    end: datetime | None = None,
    mode: Mode = "hybrid",
    include_sources: bool = True,
) -> PassageSearchResult:
    """Searches the agent's archival memory (and attached sources) by meaning and words."""
    agent = await mesh.agent(agent_id)
    found = await mesh.passages.SearchPassages(
        passage_pb2.SearchPassagesRequest(
            agent_id=agent_id,
            query=query,
            top_k=top_k,
            tags=tags or [],
            tag_match=passage_pb2.TAG_MATCH_ALL if tag_match == "all" else passage_pb2.TAG_MATCH_ANY,
            start_time=mc.timestamp(start),
            end_time=mc.timestamp(end),
            mode=mc.SEARCH_MODES.value(mode),
            embedding_model=agent.embedding_model,
            exclude_sources=not include_sources,
        )
    )
    return PassageSearchResult(
        results=[
            PassageHit(passage=mc.passage_out(m.passage), score=mc.score_out(m.score)) for m in found.matches
        ],
        embedding_model=found.embedding_model,
    )


@router.delete("/{agent_id}/archival-memory/{passage_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_passage(agent_id: str, passage_id: str, mesh: Mesh) -> Response:
    """Deletes one of the agent's passages."""
    await mesh.agent(agent_id)
    await mesh.passages.DeletePassage(
        passage_pb2.DeletePassageRequest(passage_id=passage_id, agent_id=agent_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{agent_id}/messages/search", response_model=MessageSearchResult)
async def search_messages(
    agent_id: str,
    mesh: Mesh,
    query: Annotated[str, Query(min_length=1, max_length=10_000)],
    top_k: Annotated[int, Query(ge=1, le=100)] = 10,
    roles: Annotated[
        list[Literal["system", "user", "assistant", "reasoning", "tool_call", "tool_return", "event"]] | None,
        Query(),
    ] = None,
    start: datetime | None = None,
    end: datetime | None = None,
    mode: Mode = "hybrid",
) -> MessageSearchResult:
    """Recall: searches the agent's whole history (evicted messages too) by words and meaning."""
    await mesh.agent(agent_id)
    found = await mesh.messages.SearchMessages(
        history_pb2.SearchMessagesRequest(
            agent_id=agent_id,
            query=query,
            top_k=top_k,
            kinds=[mc.ROLE_KINDS.value(role) for role in roles or []],
            start_time=mc.timestamp(start),
            end_time=mc.timestamp(end),
            mode=mc.SEARCH_MODES.value(mode),
        )
    )
    return mc.message_hits(found)

"""Archival memory rules: what may be stored, how text is cut and embedded, how searches rank.

A search covers the agent's own passages and those of its attached sources. Hybrid search (the
default) runs the keyword search while the query is being embedded, then fuses both rankings by
reciprocal rank. Vectors of different embedding models are never compared: a vector search over
passages of another model fails with EMBEDDING_MODEL_MISMATCH.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mnemo_core.errors import FailedPrecondition
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow
from mnemo_memory.chunking import chunk_text
from mnemo_memory.embedding import Embedder
from mnemo_memory.passage_store import NewPassage, Passage, PassageFilter, PassageStore, Scope
from mnemo_memory.ranking import Ranked, fuse, keyword_only, keyword_terms, vector_only

MAX_TEXT = 100_000
MAX_QUERY = 10_000
MAX_TAGS = 20
MAX_TAG_CHARS = 100
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
# Each ranking feeds this many candidates into the fusion, so either can lift a hit the other missed.
FUSION_DEPTH = 50
# Matching rows the keyword ranking scores at most (newest first): BM25 costs ~5 us each, so hybrid search
# keeps its keyword half within the time the query takes to embed; keyword-only search may spend more.
HYBRID_KEYWORD_BUDGET = 1_000
KEYWORD_BUDGET = 20_000
MODES = ("hybrid", "vector", "keyword")


def check_tags(tags: list[str], field: str = "tags") -> list[str]:
    """Tags as stored: at most 20, each 1-100 characters, no NUL, without repeats."""
    if len(tags) > MAX_TAGS:
        raise invalid(field, f"at most {MAX_TAGS} tags")
    for i, tag in enumerate(tags):
        check_text(tag, f"{field}[{i}]", max_chars=MAX_TAG_CHARS, allow_empty=False)
    return list(dict.fromkeys(tags))


def check_query(query: str, top_k: int, mode: str) -> int:
    """Validates a search; returns the effective top_k."""
    check_text(query, "query", max_chars=MAX_QUERY, allow_empty=False)
    if not query.strip():
        raise invalid("query", "must contain more than whitespace")
    if not 0 <= top_k <= MAX_TOP_K:
        raise invalid("top_k", f"must be between 0 and {MAX_TOP_K}")
    if mode not in MODES:
        raise invalid("mode", f"must be one of {', '.join(MODES)}")
    return top_k or DEFAULT_TOP_K


def check_window(start: datetime | None, end: datetime | None) -> None:
    """A time filter must not end before it starts."""
    if start is not None and end is not None and end <= start:
        raise invalid("end_time", "must be after start_time")


def model_mismatch(query_model: str, stored_model: str, what: str) -> FailedPrecondition:
    """The error of a vector search that would compare vectors of two models."""
    return FailedPrecondition(
        f"{what} holds vectors of embedding model '{stored_model}' but the query is embedded with "
        f"'{query_model}'; vectors of different models cannot be compared: search with '{stored_model}', "
        "use mode=keyword, or re-insert the passages with the new model",
        reason="EMBEDDING_MODEL_MISMATCH",
        metadata={"query_model": query_model, "stored_model": stored_model},
    )


@dataclass(frozen=True, slots=True)
class PassageHit:
    """A search result: the passage and how it ranked."""

    passage: Passage
    rank: Ranked


class ArchivalMemory:
    """Passages of one organization at a time."""

    def __init__(self, store: PassageStore, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder

    async def create(
        self,
        org_id: str,
        agent_id: str,
        text: str,
        *,
        tags: list[str],
        metadata: dict[str, Any],
        speaker: str = "",
        created_at: datetime | None = None,
        model: str = "",
    ) -> list[Passage]:
        """Stores `text` (cut into chunks) in the agent's archival memory, embedded and searchable."""
        require_id(agent_id, "agent_id")
        check_text(text, "text", max_chars=MAX_TEXT, allow_empty=False)
        chunks = chunk_text(text)
        if not chunks:
            raise invalid("text", "must contain more than whitespace")
        clean_tags = check_tags(tags)
        check_text(speaker, "speaker", max_chars=200)
        embedded = await self._embedder.embed(chunks, model, agent_id=agent_id)
        when = created_at or utcnow()
        return await self._store.insert(
            org_id,
            [
                NewPassage(
                    id=new_id("passage"),
                    text=chunk,
                    created_at=when,
                    agent_id=agent_id,
                    chunk_index=i,
                    tags=clean_tags,
                    speaker=speaker,
                    metadata=metadata,
                    model=embedded.model,
                    vector=embedded.vectors[i],
                )
                for i, chunk in enumerate(chunks)
            ],
        )

    async def get(self, org_id: str, passage_id: str, *, agent_id: str = "") -> Passage:
        """One passage of the organization (of the agent `agent_id`, when given)."""
        require_id(passage_id, "passage_id")
        return await self._store.get(org_id, passage_id, agent_id=agent_id)

    async def page(
        self, org_id: str, *, agent_id: str, source_id: str, size: int, token: str, descending: bool
    ) -> tuple[list[Passage], str]:
        """A page of an agent's (or a source's) passages; returns (page, next token)."""
        if bool(agent_id) == bool(source_id):
            raise invalid("agent_id", "set exactly one of agent_id and source_id")
        scope = Scope("agent", agent_id) if agent_id else Scope("source", source_id)
        limit = page_size(size)
        listing = f"passages-{'desc' if descending else 'asc'}"
        position = decode_token(token, listing)
        after = None if position is None else position.integer("p")
        rows = await self._store.page(org_id, scope, after_pk=after, descending=descending, limit=limit + 1)
        if len(rows) > limit:
            return rows[:limit], encode_token(listing, p=rows[limit - 1].pk)
        return rows, ""

    async def delete(self, org_id: str, passage_id: str, *, agent_id: str = "") -> None:
        """Deletes one of an agent's passages (when `agent_id` is given, only if it is that agent's)."""
        require_id(passage_id, "passage_id")
        await self._store.delete(org_id, passage_id, agent_id=agent_id)

    async def purge(self, org_id: str, agent_id: str) -> int:
        """Deletes an agent's passages and source attachments."""
        require_id(agent_id, "agent_id")
        return await self._store.purge(org_id, Scope("agent", agent_id))

    async def search(
        self,
        org_id: str,
        agent_id: str,
        query: str,
        *,
        top_k: int = 0,
        tags: list[str] | None = None,
        all_tags: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
        mode: str = "hybrid",
        model: str = "",
        exclude_sources: bool = False,
    ) -> tuple[list[PassageHit], str]:
        """The passages that best match `query`; returns (hits, embedding model used or "")."""
        require_id(agent_id, "agent_id")
        k = check_query(query, top_k, mode)
        check_window(start, end)
        where = PassageFilter(tuple(check_tags(list(tags or []))), all_tags, start, end)
        # The query is embedded (the slowest step, in the llm-gateway) while the scopes are read and the
        # keyword search runs.
        embed_task = (
            asyncio.ensure_future(self._embedder.embed([query], model, agent_id=agent_id))
            if mode != "keyword"
            else None
        )
        expected = self._embedder.resolved(model)
        keyword_task: asyncio.Future[list[tuple[int, float]]] | None = None
        early: asyncio.Future[str | None] | None = None
        try:
            scopes = [Scope("agent", agent_id)]
            if not exclude_sources:
                scopes += [Scope("source", s) for s in await self._store.source_ids(org_id, agent_id)]
            depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
            terms = keyword_terms(query) if mode != "vector" else []
            if terms:
                budget = HYBRID_KEYWORD_BUDGET if mode == "hybrid" else KEYWORD_BUDGET
                keyword_task = asyncio.ensure_future(
                    self._store.keyword_search(org_id, scopes, terms, depth, where, budget=budget)
                )
            vector: list[tuple[int, float]] = []
            used = ""
            if embed_task is not None:
                if expected:
                    early = asyncio.ensure_future(self._store.other_model(org_id, scopes, expected))
                embedded = await embed_task
                used = embedded.model
                if early is not None and expected == used:
                    other = await early
                else:
                    other = await self._store.other_model(org_id, scopes, used)
                if other is not None:
                    raise model_mismatch(used, other, f"the archival memory of agent {agent_id}")
                vector = await self._store.vector_search(
                    org_id, scopes, used, embedded.vectors[0], depth, where
                )
            keyword = await keyword_task if keyword_task is not None else []
        finally:
            for task in (embed_task, keyword_task, early):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: a failure that lost the race is not logged as unhandled
        if mode == "hybrid":
            ranked = fuse(vector, keyword, k)
        elif mode == "vector":
            ranked = vector_only(vector, k)
        else:
            ranked = keyword_only(keyword, k)
        passages = await self._store.by_pks(org_id, [hit.pk for hit in ranked])
        return [PassageHit(passages[hit.pk], hit) for hit in ranked if hit.pk in passages], used

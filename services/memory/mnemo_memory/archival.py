"""Archival memory rules: what may be stored, how text is cut and embedded, how searches rank.

A search covers the agent's own passages and those of its attached sources. Hybrid search (the
default) runs the keyword search while the query is being embedded, then fuses both rankings by
reciprocal rank. Vectors of different embedding models are never compared: a vector search over
passages of another model fails with EMBEDDING_MODEL_MISMATCH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
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
from mnemo_memory.ranking import Ranked, keyword_terms, query_terms
from mnemo_memory.retrieval import (
    CANDIDATE_DEPTH,
    DEFAULT_WEIGHTS,
    Context,
    FilteredSearch,
    Floats,
    Focus,
    Hits,
    Weights,
    keyword_candidates,
    named_speakers,
    ranked,
    vector_candidates,
    without_names,
)
from mnemo_memory.temporal import TimeHint, time_hint

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
# Rankings of hybrid search: contextual hybrid search (retrieval.py, the default) or the textbook
# reciprocal rank fusion of one vector and one keyword ranking.
CONTEXTUAL = "contextual"
RRF = "rrf"
RANKINGS = (CONTEXTUAL, RRF)


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


# How long a scope's list of speakers is trusted before it is read again on Postgres, where other replicas
# may add some (on SQLite this process writes every passage, so the list it keeps up to date never expires).
SPEAKERS_TTL_SECONDS = 60.0


class Speakers:
    """The distinct speakers of each scope, read from the store at most once a minute and kept in memory."""

    def __init__(self, store: PassageStore, now: Callable[[], datetime], ttl: float | None) -> None:
        self._store = store
        self._now = now
        self._ttl = ttl
        self._known: dict[tuple[str, str, str], tuple[float, set[str]]] = {}

    async def of(self, org_id: str, scope: Scope) -> set[str]:
        key = (org_id, scope.kind, scope.id)
        now = self._now().timestamp()
        known = self._known.get(key)
        if known is None or known[0] < now:
            if len(self._known) > 10_000:
                self._known.clear()
            expires = now + self._ttl if self._ttl is not None else float("inf")
            known = (expires, await self._store.speakers(org_id, scope))
            self._known[key] = known
        return known[1]

    def heard(self, org_id: str, scope: Scope, speaker: str) -> None:
        """A speaker this process just stored a passage of."""
        known = self._known.get((org_id, scope.kind, scope.id))
        if known is not None:
            known[1].add(speaker)


@dataclass(frozen=True, slots=True)
class PassageHit:
    """A search result: the passage and how it ranked."""

    passage: Passage
    rank: Ranked


class ArchivalMemory:
    """Passages of one organization at a time."""

    def __init__(
        self,
        store: PassageStore,
        embedder: Embedder,
        *,
        ranking: str = CONTEXTUAL,
        weights: Weights = DEFAULT_WEIGHTS,
        now: Callable[[], datetime] = utcnow,
        speakers_ttl: float | None = SPEAKERS_TTL_SECONDS,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._ranking = ranking
        self._weights = weights
        self._now = now
        self._speakers = Speakers(store, now, speakers_ttl)

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
        if speaker:
            self._speakers.heard(org_id, Scope("agent", agent_id), speaker)
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

    async def _focus(self, org_id: str, agent_id: str, query: str) -> tuple[Focus, str]:
        """What a query says about time and speakers, and what it is about (the query without those names).

        Names of the agent's speakers in the query ("what did Maya say...") say whose passages are wanted,
        not what they are about: they go to the speaker signal and leave the embedded text and keywords.
        """
        named = named_speakers(query, await self._speakers.of(org_id, Scope("agent", agent_id)))
        topic = without_names(query, named) if named else query
        return Focus(time_hint(query, self._now()), frozenset(named)), topic

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
        contextual = mode == "hybrid" and self._ranking == CONTEXTUAL
        focus, topic = (
            await self._focus(org_id, agent_id, query) if contextual else (Focus(TimeHint()), query)
        )
        hint, named = focus.hint, set(focus.speakers)
        # The query is embedded (the slowest step, in the llm-gateway) while the scopes are read and the
        # keyword search runs.
        embed_task = (
            asyncio.ensure_future(self._embedder.embed([topic], model, agent_id=agent_id))
            if mode != "keyword"
            else None
        )
        expected = self._embedder.resolved(model)
        keyword_task: asyncio.Future[list[Hits]] | None = None
        early: asyncio.Future[str | None] | None = None
        try:
            scopes = [Scope("agent", agent_id)]
            if not exclude_sources:
                scopes += [Scope("source", s) for s in await self._store.source_ids(org_id, agent_id)]
            depth = max(k, CANDIDATE_DEPTH if contextual else FUSION_DEPTH) if mode == "hybrid" else k
            terms = (query_terms(topic) if contextual else keyword_terms(query)) if mode != "vector" else []
            budget = HYBRID_KEYWORD_BUDGET if mode == "hybrid" else KEYWORD_BUDGET
            source = PassageSearch(self._store, org_id, scopes, terms, where, budget)
            if terms:
                keyword_task = asyncio.ensure_future(keyword_candidates(source, depth))
            vector: list[Hits] = []
            query_vector = None
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
                query_vector = embedded.vectors[0]
                vector = await vector_candidates(source, query_vector, used, focus, depth)
            keyword = await keyword_task if keyword_task is not None else []
        finally:
            for task in (embed_task, keyword_task, early):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: a failure that lost the race is not logged as unhandled
        found = await ranked(
            source,
            mode=mode,
            contextual=contextual,
            query=query_vector,
            model=used,
            vector=vector,
            keyword=keyword,
            hint=hint,
            k=k,
            weights=self._weights,
            named=named,
        )
        passages = await self._store.by_pks(org_id, [hit.pk for hit in found])
        return [PassageHit(passages[hit.pk], hit) for hit in found if hit.pk in passages], used


class PassageSearch(FilteredSearch[PassageFilter]):
    """The searches of one archival query: its organization, scopes, keywords and filter."""

    def __init__(
        self,
        store: PassageStore,
        org_id: str,
        scopes: list[Scope],
        terms: list[str],
        where: PassageFilter,
        budget: int,
    ) -> None:
        super().__init__(org_id, where, terms, budget)
        self._store = store
        self._scopes = scopes

    async def vector_within(self, query: Floats, model: str, depth: int, where: PassageFilter) -> Hits:
        return await self._store.vector_search(self.org_id, self._scopes, model, query, depth, where)

    async def keyword_within(self, depth: int, where: PassageFilter) -> Hits:
        return await self._store.keyword_search(
            self.org_id, self._scopes, self.terms, depth, where, budget=self.budget
        )

    async def context(self, pks: Sequence[int], model: str, *, neighbours: bool) -> dict[int, Context]:
        return await self._store.contexts(self.org_id, pks, model, neighbours=neighbours)

"""Contextual hybrid search: how archival, source-file and recall searches gather candidates and score them.

The textbook hybrid search (`ranking.fuse`: reciprocal rank fusion of a vector and a keyword ranking) treats
each stored text alone and ignores time. Conversations are not like that: a question asks "what did Maya say
about the garden in March", a fact changes ("I quit Corvel") and the newest statement is the answer, a name
("Maya") pulls the embedded query towards every short turn that greets her. So the default search:

1. reads the query (`temporal.time_hint`, and in archival memory the agent's speakers it names): a period,
   whether it wants the newest or oldest answer, whose passages it asks about (the names leave the text
   that is embedded and searched by keywords);
2. gathers candidates: the nearest vectors and the best keyword matches over everything, and the nearest
   vectors again inside the query's focus, the period and speakers it names (so a March answer is found
   even where other months' texts outrank it overall);
3. scores every candidate on one scale: cosine similarity, keyword score (relative to the best match),
   whether it lies in the named period, its age among the candidates when the query prefers new or old,
   whether a named speaker said it, and (weight 0 by default: measured without gain) the similarity of its
   neighbours (the texts just before and after it in the same scope, stored close in time).

The weights (`Weights`) were tuned on one synthetic set of long conversations and checked on another
(`bench/recall.py`, docs/adr/0203-contextual-hybrid-search.md). No model other than the embedding model
is called.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt

from mnemo_memory.ranking import Ranked, fuse, keyword_only, vector_only
from mnemo_memory.temporal import TimeHint

Floats = npt.NDArray[np.float32]
FilterT = TypeVar("FilterT", bound="Narrowable")
_WORD = re.compile(r"[^\W_]{2,}", re.UNICODE)
Hits = list[tuple[int, float]]

# Texts stored within this many seconds of each other in one scope count as neighbours (a dialog's turns
# come minutes apart; two unrelated notes an agent stored on different days do not lift each other).
NEIGHBOUR_SECONDS = 3600.0
# Candidates each ranking contributes: enough for a weak signal in one ranking to be lifted by the others.
CANDIDATE_DEPTH = 50


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each signal counts in a candidate's score (similarity and keyword score are 0..1)."""

    similarity: float = 1.0
    keyword: float = 0.05
    period: float = 0.45
    recency: float = 0.15
    # Measured without gain on the tune split (docs/adr/0203): off, and then neighbours are not even read.
    neighbours: float = 0.0
    speaker: float = 0.45


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True, slots=True)
class Context:
    """What scoring needs of a stored text: its vector (None while not embedded), time, neighbours' vectors."""

    vector: Floats | None
    epoch: float
    neighbours: tuple[Floats, ...] = ()
    # Who said it (a passage's speaker; "" when unknown).
    speaker: str = ""


class Searchable(Protocol):
    """The searches one kind of stored text offers; `focus` None means no restriction from the query."""

    async def vector(self, query: Floats, model: str, depth: int, focus: Focus | None) -> Hits:
        """The nearest texts embedded with `model`: (key, cosine similarity), best first."""
        ...

    async def keyword(self, depth: int, focus: Focus | None) -> Hits:
        """The best keyword matches: (key, score where lower is better), best first."""
        ...

    async def context(self, pks: Sequence[int], model: str, *, neighbours: bool) -> dict[int, Context]:
        """Vectors and times of texts embedded with `model` (and their neighbours' vectors when asked)."""
        ...


@dataclass(frozen=True, slots=True)
class Focus:
    """Where a query's second round of candidates is searched: the period and the speakers it names."""

    hint: TimeHint
    speakers: frozenset[str] = frozenset()

    @property
    def narrows(self) -> bool:
        return self.hint.has_period or bool(self.speakers)


class Narrowable(Protocol):
    """A search filter that a query's focus can narrow."""

    def within(self, focus: Focus) -> Self | None: ...


class FilteredSearch(Generic[FilterT]):
    """The searches of one query under its filter, narrowed to the query's focus where asked.

    Subclasses say how to search with a filter (`vector_within`, `keyword_within`) and how to read contexts.
    """

    def __init__(self, org_id: str, where: FilterT, terms: list[str], budget: int) -> None:
        self.org_id = org_id
        self.where = where
        self.terms = terms
        # Matching rows the keyword ranking scores at most (archival.HYBRID_KEYWORD_BUDGET).
        self.budget = budget

    async def vector(self, query: Floats, model: str, depth: int, focus: Focus | None) -> Hits:
        where = self.where if focus is None else self.where.within(focus)
        return [] if where is None else await self.vector_within(query, model, depth, where)

    async def keyword(self, depth: int, focus: Focus | None) -> Hits:
        where = self.where if focus is None else self.where.within(focus)
        return [] if where is None or not self.terms else await self.keyword_within(depth, where)

    async def vector_within(self, query: Floats, model: str, depth: int, where: FilterT) -> Hits:
        raise NotImplementedError

    async def keyword_within(self, depth: int, where: FilterT) -> Hits:
        raise NotImplementedError


def candidates(vector_lists: list[Hits], keyword_lists: list[Hits]) -> list[int]:
    """Every key some ranking found, once."""
    return list(dict.fromkeys(pk for hits in (*vector_lists, *keyword_lists) for pk, _ in hits))


async def keyword_candidates(source: Searchable, depth: int) -> list[Hits]:
    """The keyword ranking over everything. A second round inside the query's focus, as vectors have,
    added nothing measurable (docs/adr/0203) and costs ~5 ms of CPU at 100k passages."""
    return [await source.keyword(depth, None)]


async def vector_candidates(
    source: Searchable, query: Floats, model: str, focus: Focus, depth: int
) -> list[Hits]:
    """The vector rankings: over everything, and inside the query's focus when it has one."""
    rounds: list[Focus | None] = [None, focus] if focus.narrows else [None]
    return list(await asyncio.gather(*(source.vector(query, model, depth, where) for where in rounds)))


def score(
    query: Floats,
    vector_lists: list[Hits],
    keyword_lists: list[Hits],
    contexts: dict[int, Context],
    hint: TimeHint,
    k: int,
    weights: Weights = DEFAULT_WEIGHTS,
    named: set[str] | frozenset[str] = frozenset(),
) -> list[Ranked]:
    """The k best candidates by the weighted sum of their signals (module docstring)."""
    vector_rank = {pk: rank for rank, (pk, _) in enumerate(vector_lists[0] if vector_lists else [], start=1)}
    keyword_rank: dict[int, int] = {}
    keyword_raw: dict[int, float] = {}
    for hits in keyword_lists:
        for rank, (pk, value) in enumerate(hits, start=1):
            keyword_rank.setdefault(pk, rank)
            # Stores return "lower is better" (bm25(), negated ts_rank()): the best has the lowest value.
            keyword_raw[pk] = min(keyword_raw.get(pk, 0.0), value)
    best_keyword = min(keyword_raw.values(), default=0.0)
    pks = [
        pk
        for pk in dict.fromkeys([pk for hits in vector_lists for pk, _ in hits] + list(keyword_raw))
        if pk in contexts
    ]
    if not pks:
        return []
    keyword = np.array([keyword_raw.get(pk, 0.0) / best_keyword if best_keyword < 0 else 0.0 for pk in pks])
    similarity = np.array([_similarity(contexts[pk].vector, query) for pk in pks], np.float32)
    missing = np.isnan(similarity)
    if missing.any():
        # Found by words before being embedded (recall's newest messages): as similar as the best vector
        # hit, scaled by how well its words match, rather than not similar at all.
        best = float(np.nanmax(similarity)) if not missing.all() else 1.0
        similarity[missing] = best * keyword[missing]
    epochs = np.array([contexts[pk].epoch for pk in pks])
    total = weights.similarity * similarity + weights.keyword * keyword
    if hint.has_period:
        total += weights.period * np.array([1.0 if hint.contains(epoch) else 0.0 for epoch in epochs])
    if hint.recency and len(pks) > 1:
        # Age among the candidates that are plausible answers at all, 0 (oldest) .. 1 (newest).
        relevant = total >= np.quantile(total, 0.5)
        low, high = epochs[relevant].min(), epochs[relevant].max()
        if high > low:
            age = np.clip((epochs - low) / (high - low), 0.0, 1.0)
            total += weights.recency * hint.recency * (age - 0.5) * 2 * relevant
    if named and weights.speaker:
        total += weights.speaker * np.array([1.0 if contexts[pk].speaker in named else 0.0 for pk in pks])
    if weights.neighbours:
        total += weights.neighbours * np.array(
            [max((float(v @ query) for v in contexts[pk].neighbours), default=0.0) for pk in pks]
        )
    order = np.argsort(-total, kind="stable")[:k]
    return [
        Ranked(
            pks[i],
            float(total[i]),
            vector_rank=vector_rank.get(pks[i], 0),
            similarity=float(similarity[i]),
            keyword_rank=keyword_rank.get(pks[i], 0),
        )
        for i in order
    ]


def named_speakers(query: str, speakers: set[str]) -> set[str]:
    """The speakers the query names, by any word of their name (case ignored)."""
    words = set(_WORD.findall(query.lower()))
    return {speaker for speaker in speakers if words & set(_WORD.findall(speaker.lower()))}


def without_names(query: str, speakers: set[str]) -> str:
    """The query without the words of these speakers' names (and their possessive 's)."""
    words = {word for speaker in speakers for word in _WORD.findall(speaker.lower())}
    pattern = re.compile(
        r"\b(" + "|".join(re.escape(w) for w in sorted(words)) + r")(?:'s|\u2019s)?\b", re.IGNORECASE
    )
    stripped = " ".join(pattern.sub(" ", query).split())
    return stripped or query


async def ranked(
    source: Searchable,
    *,
    mode: str,
    contextual: bool,
    query: Floats | None,
    model: str,
    vector: list[Hits],
    keyword: list[Hits],
    hint: TimeHint,
    k: int,
    weights: Weights,
    named: set[str] | frozenset[str] = frozenset(),
) -> list[Ranked]:
    """The k results of a search from its rankings: scored in context, fused by rank, or one ranking alone."""
    if contextual and query is not None:
        contexts = await source.context(candidates(vector, keyword), model, neighbours=weights.neighbours > 0)
        return score(query, vector, keyword, contexts, hint, k, weights, named)
    by_vector, by_keyword = vector[0] if vector else [], keyword[0] if keyword else []
    if mode == "hybrid":
        return fuse(by_vector, by_keyword, k)
    if mode == "vector":
        return vector_only(by_vector, k)
    return keyword_only(by_keyword, k)


def _similarity(vector: Floats | None, query: Floats) -> float:
    return float("nan") if vector is None else float(vector @ query)


def decoded(value: object) -> Floats:
    """A stored vector as float32: SQLite keeps the bytes, pgvector returns an array."""
    if isinstance(value, bytes | bytearray | memoryview):
        return np.frombuffer(value, np.float32)
    to_numpy = getattr(value, "to_numpy", None)
    array = to_numpy() if to_numpy is not None else value
    return np.asarray(array, np.float32)

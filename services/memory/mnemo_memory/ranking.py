"""How searches rank: keyword queries for the full-text index, and reciprocal rank fusion of two rankings."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Reciprocal rank fusion constant (Cormack et al.): damps the weight of the very first ranks.
RRF_K = 60
MAX_QUERY_TERMS = 32

_WORD = re.compile(r"\w+", re.UNICODE)
# Words that carry no meaning for a keyword match; dropped unless nothing else is left.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves""".split()  # noqa: SIM905 - a word list reads better as text
)


def scope_token(kind: str, scope_id: str) -> str:
    """The single full-text token naming a scope (an agent's or a source's rows), e.g. "agent6f1c...".

    Rows carry it in an indexed column, so the full-text engine itself keeps a search inside its scopes.
    """
    return kind + re.sub(r"[^0-9A-Za-z]", "", scope_id).lower()


def scoped_match(match: str, scopes: list[str]) -> str:
    """An FTS5 query for `match` (from fts5_any) restricted to rows of the given scope tokens."""
    tokens = " OR ".join(f'"{token}"' for token in scopes)
    return f"{{scope}} : ({tokens}) AND {{text}} : ({match})"


def keyword_terms(text: str) -> list[str]:
    """The words of `text` a keyword search looks for: lower case, meaningful ones only unless none is, unique."""
    words = [word.lower() for word in _WORD.findall(text)]
    meaningful = [word for word in words if word not in STOPWORDS] or words
    return list(dict.fromkeys(meaningful))[:MAX_QUERY_TERMS]


# Words of a question that say what is asked, not what it is about: dropped from the keyword half of
# contextual search (with STOPWORDS and the words naming a time, which the time hint handles).
QUESTION_WORDS = frozenset(
    [
        "say",
        "said",
        "says",
        "tell",
        "told",
        "mention",
        "mentioned",
        "talk",
        "talked",
        "share",
        "shared",
        "happen",
        "happened",
        "happening",
        "going",
        "news",
        "update",
        "updates",
        "anything",
        "something",
        "new",
        "recent",
        "recently",
        "latest",
        "current",
        "currently",
        "now",
        "still",
        "anymore",
        "lately",
        "nowadays",
        "first",
        "originally",
        "previously",
        "previous",
        "before",
        "earlier",
        "used",
        "back",
        "around",
        "ago",
        "last",
        "week",
        "month",
        "year",
        "yesterday",
        "today",
        "much",
        "many",
        "long",
        "kind",
        "sort",
        "like",
        "get",
        "got",
        "thing",
        "things",
    ]
)
TIME_WORDS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "spring",
        "summer",
        "autumn",
        "fall",
        "winter",
        "early",
        "mid",
        "late",
    ]
)


def query_terms(text: str) -> list[str]:
    """The words of a question a keyword search should look for: `keyword_terms` without question words,
    time words and single letters (the "s" of "Maya's"), unless nothing else is left."""
    terms = keyword_terms(text)
    kept = [
        term
        for term in terms
        if term not in QUESTION_WORDS and term not in TIME_WORDS and (len(term) > 1 or term.isdigit())
    ]
    return kept or terms


def fts5_any(terms: list[str]) -> str:
    """An FTS5 query matching any of the terms (each quoted, so no operator syntax leaks in)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def tsquery_any(terms: list[str]) -> str:
    """A Postgres `to_tsquery` text matching any of the terms (word characters only, each quoted)."""
    # A term holds word characters only (see _WORD); quoting keeps one like "foo_bar" a phrase, as in FTS5.
    return " | ".join("'" + term + "'" for term in terms)


@dataclass(frozen=True, slots=True)
class Ranked:
    """One hit of a fused ranking."""

    pk: int
    score: float
    vector_rank: int = 0
    similarity: float = 0.0
    keyword_rank: int = 0


def fuse(vector: list[tuple[int, float]], keyword: list[tuple[int, float]], k: int) -> list[Ranked]:
    """Reciprocal rank fusion of a vector ranking (key, similarity) and a keyword ranking (key, score)."""
    hits: dict[int, Ranked] = {}
    for rank, (pk, similarity) in enumerate(vector, start=1):
        hits[pk] = Ranked(pk, 1.0 / (RRF_K + rank), vector_rank=rank, similarity=similarity)
    for rank, (pk, _) in enumerate(keyword, start=1):
        found = hits.get(pk)
        score = 1.0 / (RRF_K + rank)
        if found is None:
            hits[pk] = Ranked(pk, score, keyword_rank=rank)
        else:
            hits[pk] = Ranked(pk, found.score + score, found.vector_rank, found.similarity, keyword_rank=rank)
    return sorted(hits.values(), key=lambda hit: (-hit.score, hit.pk))[:k]


def vector_only(vector: list[tuple[int, float]], k: int) -> list[Ranked]:
    """A vector ranking as results: the score is the cosine similarity."""
    return [
        Ranked(pk, similarity, vector_rank=rank, similarity=similarity)
        for rank, (pk, similarity) in enumerate(vector[:k], start=1)
    ]


def keyword_only(keyword: list[tuple[int, float]], k: int) -> list[Ranked]:
    """A keyword ranking (key, score where lower is better) as results: the score negated (higher is better).

    The keyword score is SQLite's bm25() or, on Postgres, the negated ts_rank().
    """
    return [Ranked(pk, -bm25, keyword_rank=rank) for rank, (pk, bm25) in enumerate(keyword[:k], start=1)]

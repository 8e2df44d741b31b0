"""Search building blocks of the memory service: chunking, keyword queries, rank fusion, vector indexes."""

from __future__ import annotations

import numpy as np
import pytest

from mnemo_memory.chunking import chunk_text
from mnemo_memory.ranking import fts5_any, fuse, keyword_terms, scope_token, scoped_match, tsquery_any
from mnemo_memory.vectors import MIN_CANDIDATES, VectorFilter, VectorIndex, VectorRows


def unit_rows(count: int, dim: int = 384, seed: int = 0, first_pk: int = 1) -> VectorRows:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pks = np.arange(first_pk, first_pk + count, dtype=np.int64)
    epochs = pks.astype(np.float64)
    return VectorRows(pks, vectors, epochs, (pks % 3).astype(np.int8))


def test_chunks_respect_the_size_and_cut_at_paragraph_breaks() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(5)]
    chunks = chunk_text("\n\n".join(paragraphs), max_chars=1000)
    assert all(len(chunk) <= 1000 for chunk in chunks)
    assert all(chunk.startswith("Paragraph") for chunk in chunks)
    assert len(chunks) == 5


def test_chunks_of_text_without_breaks_still_fit_and_lose_nothing() -> None:
    text = "x" * 2500
    chunks = chunk_text(text, max_chars=1000)
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 500]
    assert "".join(chunks) == text


def test_whitespace_only_text_has_no_chunks() -> None:
    assert chunk_text(" \n\n\t ") == []


def test_keyword_terms_drop_stopwords_unless_nothing_else_is_left() -> None:
    assert keyword_terms('What is the "NEAR(x y)" AND Zephyr-9?') == ["near", "x", "y", "zephyr", "9"]
    assert keyword_terms("the of and the") == ["the", "of", "and"]
    assert keyword_terms("?!") == []


def test_keyword_queries_quote_every_term_so_no_operator_syntax_leaks_in() -> None:
    terms = keyword_terms('What is the "NEAR(x y)" AND Zephyr-9 or foo_bar?')
    assert fts5_any(terms) == '"near" OR "x" OR "y" OR "zephyr" OR "9" OR "foo_bar"'
    assert tsquery_any(terms) == "'near' | 'x' | 'y' | 'zephyr' | '9' | 'foo_bar'"


def test_scoped_match_keeps_the_search_inside_its_scopes() -> None:
    token = scope_token("agent", "agent-6F1C-00aa")
    assert token == "agentagent6f1c00aa"
    assert scoped_match('"tea"', [token]) == '{scope} : ("agentagent6f1c00aa") AND {text} : ("tea")'


def test_fusion_rewards_hits_found_by_both_rankings() -> None:
    vector = [(1, 0.9), (2, 0.8), (3, 0.7)]
    keyword = [(3, -5.0), (4, -4.0)]
    fused = fuse(vector, keyword, k=4)
    assert fused[0].pk == 3
    assert (fused[0].vector_rank, fused[0].keyword_rank) == (3, 1)
    assert {hit.pk for hit in fused} == {1, 2, 3, 4}
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)


@pytest.mark.parametrize("count", [100, 20_000])
def test_vector_search_finds_the_nearest_rows_small_and_large(count: int) -> None:
    rows = unit_rows(count)
    index = VectorIndex(dim=384)
    index.add(rows)
    assert (index.codes is not None) == (count > 2 * MIN_CANDIDATES)
    query = rows.vectors[42] + 0.05 * unit_rows(1, seed=9).vectors[0]
    query /= np.linalg.norm(query)
    exact = np.argsort(-(rows.vectors @ query))[:10] + 1
    found = index.search(query, 10, VectorFilter())
    assert found[0][0] == 43
    assert len(set(exact.tolist()) & {pk for pk, _ in found}) >= 9
    sims = [sim for _, sim in found]
    assert sims == sorted(sims, reverse=True)


def test_vector_search_applies_time_kind_and_key_filters() -> None:
    rows = unit_rows(500)
    index = VectorIndex(dim=384)
    index.add(rows)
    query = rows.vectors[10]
    in_window = index.search(query, 500, VectorFilter(start_epoch=100, end_epoch=200))
    assert {pk for pk, _ in in_window} == set(range(100, 200))
    of_kind = index.search(query, 500, VectorFilter(kinds=frozenset({1})))
    assert all(pk % 3 == 1 for pk, _ in of_kind)
    allowed = index.search(query, 10, VectorFilter(allowed_pks=np.array([7, 8], np.int64)))
    assert sorted(pk for pk, _ in allowed) == [7, 8]


def test_removed_rows_are_never_found_again_and_new_rows_are() -> None:
    rows = unit_rows(6000)
    index = VectorIndex(dim=384)
    index.add(rows)
    assert index.remove(np.array([1, 2, 3], np.int64)) == 3
    assert 1 not in {pk for pk, _ in index.search(rows.vectors[0], 5, VectorFilter())}
    extra = unit_rows(10, seed=5, first_pk=10_000)
    index.add(extra)
    assert index.search(extra.vectors[4], 1, VectorFilter())[0][0] == 10_004
    assert index.size == 6000 - 3 + 10

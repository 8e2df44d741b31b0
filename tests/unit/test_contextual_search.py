"""Contextual hybrid search: what a query says about time and speakers, and how candidates are scored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mnemo_memory.passage_store import PassageFilter
from mnemo_memory.ranking import query_terms
from mnemo_memory.retrieval import Context, Focus, Weights, named_speakers, score, without_names
from mnemo_memory.temporal import TimeHint, time_hint
from mnemo_memory.vectors import VectorFilter, VectorIndex, VectorRows

NOW = datetime(2026, 3, 18, 15, 30, tzinfo=UTC)  # a Wednesday


def at(year: int, month: int, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("What did Maya say about the garden in March?", TimeHint(months=frozenset({3}))),
        ("news from May 2024", TimeHint(at(2024, 5), at(2024, 6))),
        ("what happened on March 3rd 2024", TimeHint(at(2024, 3, 2), at(2024, 3, 5))),
        ("the 2024-05-03 meeting", TimeHint(at(2024, 5, 2), at(2024, 5, 5))),
        ("trips in the summer", TimeHint(months=frozenset({6, 7, 8}))),
        ("what did we do in the fall", TimeHint(months=frozenset({9, 10, 11}))),
        ("winter 2024 plans", TimeHint(at(2023, 12), at(2024, 3))),
        ("what we did in 2023", TimeHint(at(2023, 1), at(2024, 1))),
        ("what did I say yesterday", TimeHint(at(2026, 3, 17), at(2026, 3, 18))),
        ("what did I say last week", TimeHint(at(2026, 3, 9), at(2026, 3, 16))),
        ("anything from last month", TimeHint(at(2026, 2), at(2026, 3))),
        (
            "what happened 3 weeks ago",
            TimeHint(NOW - timedelta(days=21 + 3.5), NOW - timedelta(days=21 - 3.5)),
        ),
    ],
)
def test_a_query_naming_a_period_gives_that_period(query: str, expected: TimeHint) -> None:
    assert time_hint(query, NOW) == expected


@pytest.mark.parametrize(
    "query",
    [
        "May I ask what Maya's job is?",
        "Did the troops march on?",
        "Tell me about the fall of Rome",
        "mar a lago",
    ],
)
def test_month_and_season_words_that_are_not_times_name_no_period(query: str) -> None:
    assert not time_hint(query, NOW).has_period


@pytest.mark.parametrize(
    ("query", "recency"),
    [
        ("Where does Maya work now?", 1),
        ("What is her current job?", 1),
        ("Where did Maya live originally?", -1),
        ("What was his previous car?", -1),
        ("What is Maya's job?", 0),
    ],
)
def test_a_query_says_whether_it_wants_the_newest_or_the_oldest_answer(query: str, recency: int) -> None:
    assert time_hint(query, NOW).recency == recency


def test_a_month_period_contains_that_month_of_any_year_only() -> None:
    march = TimeHint(months=frozenset({3}))
    assert march.contains(at(2019, 3, 31).timestamp())
    assert march.contains(at(2024, 3, 1).timestamp())
    assert not march.contains(at(2024, 4, 1).timestamp())


def test_a_filter_narrowed_to_a_focus_keeps_every_restriction_or_none() -> None:
    user = PassageFilter(("a",), start=at(2024, 1), end=at(2025, 1))
    narrowed = user.within(Focus(TimeHint(at(2024, 6), at(2026, 1), frozenset({7})), frozenset({"Maya"})))
    assert narrowed == PassageFilter(
        ("a",), start=at(2024, 6), end=at(2025, 1), months=frozenset({7}), speakers=frozenset({"Maya"})
    )
    assert user.within(Focus(TimeHint(at(2025, 6), at(2026, 1)))) is None
    assert PassageFilter(months=frozenset({1})).within(Focus(TimeHint(months=frozenset({2})))) is None
    assert PassageFilter(speakers=frozenset({"Tom"})).within(Focus(TimeHint(), frozenset({"Maya"}))) is None


def test_vector_search_filters_by_month_of_year() -> None:
    index = VectorIndex(dim=2)
    epochs = np.array([at(2024, m, 15).timestamp() for m in (1, 3, 3, 5)])
    vectors = np.array([[1, 0], [1, 0], [0.8, 0.6], [1, 0]], np.float32)
    index.add(VectorRows(np.arange(1, 5, dtype=np.int64), vectors, epochs, np.zeros(4, np.int8)))
    found = index.search(np.array([1, 0], np.float32), 10, VectorFilter(months=frozenset({3})))
    assert [pk for pk, _ in found] == [2, 3]


def test_question_words_and_time_words_leave_the_keyword_query() -> None:
    assert query_terms("What did Maya say about the garden in March?") == ["maya", "garden"]
    assert query_terms("Where is INV-4471 now?") == ["inv", "4471"]
    assert query_terms("what happened now?") == ["happened"]  # nothing else left: kept


def test_a_speakers_name_is_found_in_the_query_and_taken_out_of_it() -> None:
    speakers = {"Maya Lind", "Tom"}
    assert named_speakers("What did maya's sister say?", speakers) == {"Maya Lind"}
    assert named_speakers("What did Tommy say?", speakers) == set()
    assert (
        without_names("What did Maya's sister say to Tom?", {"Maya Lind", "Tom"})
        == "What did sister say to ?"
    )
    assert without_names("Maya", {"Maya Lind"}) == "Maya"  # nothing else left: kept


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, np.float32)
    return vector / np.linalg.norm(vector)


QUERY = unit(1, 0, 0)


def ranked_keys(
    contexts: dict[int, Context], hint: TimeHint, weights: Weights, **kwargs: object
) -> list[int]:
    vector = [(pk, float(c.vector @ QUERY)) for pk, c in contexts.items() if c.vector is not None]
    vector.sort(key=lambda hit: -hit[1])
    return [hit.pk for hit in score(QUERY, [vector], [], contexts, hint, 10, weights, **kwargs)]  # type: ignore[arg-type]


def test_a_text_in_the_named_period_outranks_a_slightly_closer_one_outside() -> None:
    contexts = {
        1: Context(unit(1, 0.3, 0), at(2024, 2, 10).timestamp()),
        2: Context(unit(1, 0.4, 0), at(2024, 3, 10).timestamp()),
    }
    assert ranked_keys(contexts, TimeHint(), Weights()) == [1, 2]
    assert ranked_keys(contexts, TimeHint(months=frozenset({3})), Weights()) == [2, 1]


def test_the_newest_or_the_oldest_of_similar_texts_wins_as_the_query_asks() -> None:
    contexts = {
        1: Context(unit(1, 0.3, 0), at(2023, 1).timestamp()),
        2: Context(unit(1, 0.35, 0), at(2024, 1).timestamp()),
        3: Context(unit(0, 1, 0), at(2025, 1).timestamp()),  # unrelated, however new
    }
    assert ranked_keys(contexts, TimeHint(recency=1), Weights())[:2] == [2, 1]
    assert ranked_keys(contexts, TimeHint(recency=-1), Weights())[:2] == [1, 2]
    assert ranked_keys(contexts, TimeHint(recency=1), Weights())[-1] == 3


def test_the_named_speakers_texts_outrank_the_others() -> None:
    contexts = {
        1: Context(unit(1, 0.2, 0), 0.0, speaker="Tom"),
        2: Context(unit(1, 0.4, 0), 0.0, speaker="Maya"),
    }
    assert ranked_keys(contexts, TimeHint(), Weights()) == [1, 2]
    assert ranked_keys(contexts, TimeHint(), Weights(), named={"Maya"}) == [2, 1]


def test_a_neighbour_close_to_the_query_lifts_a_reply_when_neighbours_count() -> None:
    contexts = {
        1: Context(unit(1, 0.5, 0), 0.0),
        2: Context(unit(1, 0.6, 0), 60.0, neighbours=(unit(1, 0, 0),)),
    }
    assert ranked_keys(contexts, TimeHint(), Weights(neighbours=0.0)) == [1, 2]
    assert ranked_keys(contexts, TimeHint(), Weights(neighbours=0.3)) == [2, 1]


def test_a_text_found_by_words_before_it_is_embedded_still_ranks() -> None:
    contexts = {1: Context(unit(1, 0, 0), 0.0), 2: Context(None, 10.0)}
    ranked = score(QUERY, [[(1, 1.0)]], [[(2, -5.0)]], contexts, TimeHint(), 10)
    waiting = next(hit for hit in ranked if hit.pk == 2)
    assert {hit.pk for hit in ranked} == {1, 2}
    assert waiting.keyword_rank == 1
    assert waiting.score > 0.5

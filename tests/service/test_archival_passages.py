"""PassageService over real gRPC: archival memory with real local embeddings from the llm-gateway."""

# The fixtures come from memory_with_embeddings and are named as arguments (pytest's way).
# ruff: noqa: F811

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pytest
from google.protobuf import timestamp_pb2

from mnemo.memory.v1 import passage_pb2, search_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import FailedPrecondition, InvalidArgument, NotFound
from mnemo_memory.passage_store import NewPassage
from tests.service.conftest import new_actor, new_agent_id
from tests.service.memory_with_embeddings import (  # noqa: F401 - fixtures
    archival_memory,
    fake_weaviate,
    memory_app,
    memory_database,
    memory_postgres,
    passage_backend,
    passages,
)

if TYPE_CHECKING:
    from mnemo.memory.v1.passage_pb2_grpc import PassageServiceAsyncStub as Passages
    from tests.service.conftest import Served

FACTS = [
    "My favourite food is sushi, especially salmon nigiri.",
    "The cat sleeps on the warm windowsill every afternoon.",
    "Project Falcon launches on March 3rd with the Zephyr-9 rocket.",
    "Last summer I went hiking in the Alps near Zermatt.",
    "The quarterly budget review is scheduled for next Tuesday.",
]


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


async def insert(passages: Passages, agent_id: str, text: str, **fields: object) -> list[passage_pb2.Passage]:
    response = await passages.CreatePassages(
        passage_pb2.CreatePassagesRequest(agent_id=agent_id, text=text, **fields)
    )
    return list(response.passages)


async def search(
    passages: Passages, agent_id: str, query: str, **fields: object
) -> list[passage_pb2.PassageMatch]:
    response = await passages.SearchPassages(
        passage_pb2.SearchPassagesRequest(agent_id=agent_id, query=query, **fields)
    )
    return list(response.matches)


async def seeded(passages: Passages) -> tuple[Actor, str]:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        for fact in FACTS:
            await insert(passages, agent_id, fact)
    return actor, agent_id


async def test_inserted_passage_records_its_model_dimension_and_time(passages: Passages) -> None:
    before = datetime.now(UTC)
    with acting_as(new_actor()):
        (passage,) = await insert(
            passages, new_agent_id(), "Ada was born in 1815.", tags=["bio"], speaker="user"
        )
    assert passage.id.startswith("passage-")
    assert passage.embedding_model == "local/all-minilm-l6-v2"
    assert passage.embedding_dim == 384
    assert list(passage.tags) == ["bio"]
    assert passage.speaker == "user"
    assert passage.create_time.ToDatetime(tzinfo=UTC) >= before - timedelta(seconds=1)


async def test_long_text_is_cut_into_ordered_chunks_that_are_all_searchable(passages: Passages) -> None:
    paragraphs = [f"Paragraph {i} talks about topic number {i} in some detail. " * 8 for i in range(6)]
    text = "\n\n".join(paragraphs)
    with acting_as(new_actor()):
        agent_id = new_agent_id()
        stored = await insert(passages, agent_id, text)
        assert len(stored) > 1
        assert [p.chunk_index for p in stored] == list(range(len(stored)))
        assert all(len(p.text) <= 1000 for p in stored)
        listed = await passages.ListPassages(
            passage_pb2.ListPassagesRequest(agent_id=agent_id, page_size=100)
        )
    assert [p.id for p in listed.passages] == [p.id for p in stored]


async def test_vector_search_finds_a_paraphrase_that_shares_no_keyword(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    with acting_as(actor):
        vector = await search(
            passages, agent_id, "what does the user like to eat?", mode=search_pb2.SEARCH_MODE_VECTOR
        )
        keyword = await search(
            passages, agent_id, "what does the user like to eat?", mode=search_pb2.SEARCH_MODE_KEYWORD
        )
    assert vector[0].passage.text == FACTS[0]
    assert vector[0].score.vector_rank == 1
    assert FACTS[0] not in [m.passage.text for m in keyword]


async def test_keyword_search_finds_an_exact_name_that_vector_search_ranks_low(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    with acting_as(actor):
        keyword = await search(passages, agent_id, "Zephyr-9", mode=search_pb2.SEARCH_MODE_KEYWORD, top_k=1)
    assert [m.passage.text for m in keyword] == [FACTS[2]]
    assert keyword[0].score.keyword_rank == 1


async def test_a_query_of_stop_words_only_still_matches_them_by_keyword(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    with acting_as(actor):
        found = await search(passages, agent_id, "The", mode=search_pb2.SEARCH_MODE_KEYWORD, top_k=10)
    assert sorted(m.passage.text for m in found) == sorted(
        fact for fact in FACTS if " the " in f" {fact.lower()}"
    )


async def test_hybrid_search_is_the_default_and_fuses_both_rankings(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    with acting_as(actor):
        response = await passages.SearchPassages(
            passage_pb2.SearchPassagesRequest(agent_id=agent_id, query="when does Falcon launch?", top_k=3)
        )
    best = response.matches[0]
    assert best.passage.text == FACTS[2]
    assert best.score.vector_rank >= 1
    assert best.score.keyword_rank == 1
    assert response.embedding_model == "local/all-minilm-l6-v2"
    scores = [m.score.score for m in response.matches]
    assert scores == sorted(scores, reverse=True)


async def test_search_filters_by_tags_any_or_all(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        await insert(passages, agent_id, "Ada likes green tea.", tags=["food", "ada"])
        await insert(passages, agent_id, "Bob likes black coffee.", tags=["food"])
        await insert(passages, agent_id, "Ada plays the violin.", tags=["ada"])
        any_food = await search(passages, agent_id, "drinks", tags=["food"], top_k=10)
        all_tags = await search(
            passages, agent_id, "drinks", tags=["food", "ada"], tag_match=passage_pb2.TAG_MATCH_ALL, top_k=10
        )
    assert sorted(m.passage.text for m in any_food) == ["Ada likes green tea.", "Bob likes black coffee."]
    assert [m.passage.text for m in all_tags] == ["Ada likes green tea."]


async def test_search_filters_by_time_window(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    old = datetime(2020, 5, 1, tzinfo=UTC)
    with acting_as(actor):
        await insert(passages, agent_id, "We adopted a dog named Rex.", create_time=stamp(old))
        await insert(passages, agent_id, "We adopted a cat named Tom.")
        in_2020 = await search(
            passages,
            agent_id,
            "adopted pet",
            start_time=stamp(datetime(2020, 1, 1, tzinfo=UTC)),
            end_time=stamp(datetime(2021, 1, 1, tzinfo=UTC)),
        )
    assert [m.passage.text for m in in_2020] == ["We adopted a dog named Rex."]
    assert in_2020[0].passage.create_time.ToDatetime(tzinfo=UTC) == old


async def test_list_pages_through_passages_in_both_orders(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        texts = [f"Note number {i}." for i in range(5)]
        for text in texts:
            await insert(passages, agent_id, text)
        first = await passages.ListPassages(passage_pb2.ListPassagesRequest(agent_id=agent_id, page_size=2))
        second = await passages.ListPassages(
            passage_pb2.ListPassagesRequest(agent_id=agent_id, page_size=10, page_token=first.next_page_token)
        )
        newest = await passages.ListPassages(
            passage_pb2.ListPassagesRequest(
                agent_id=agent_id, page_size=2, order=passage_pb2.PASSAGE_ORDER_DESCENDING
            )
        )
    assert [p.text for p in first.passages] + [p.text for p in second.passages] == texts
    assert second.next_page_token == ""
    assert [p.text for p in newest.passages] == texts[:-3:-1]


async def test_deleted_passage_is_gone_from_get_list_and_search(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    with acting_as(actor):
        (hit,) = await search(passages, agent_id, "sushi", top_k=1)
        await passages.DeletePassage(passage_pb2.DeletePassageRequest(passage_id=hit.passage.id))
        with pytest.raises(NotFound):
            await passages.GetPassage(passage_pb2.GetPassageRequest(passage_id=hit.passage.id))
        after = await search(passages, agent_id, "favourite food sushi", top_k=5)
        with pytest.raises(NotFound):
            await passages.DeletePassage(passage_pb2.DeletePassageRequest(passage_id=hit.passage.id))
    assert hit.passage.id not in [m.passage.id for m in after]


async def test_purge_deletes_every_passage_of_the_agent_only(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    other = new_agent_id()
    with acting_as(actor):
        await insert(passages, other, "Another agent's note about sushi.")
        purged = await passages.PurgeAgentPassages(passage_pb2.PurgeAgentPassagesRequest(agent_id=agent_id))
        again = await passages.PurgeAgentPassages(passage_pb2.PurgeAgentPassagesRequest(agent_id=agent_id))
        left = await search(passages, agent_id, "sushi")
        others = await search(passages, other, "sushi")
    assert purged.deleted_count == len(FACTS)
    assert again.deleted_count == 0
    assert left == []
    assert len(others) == 1


async def test_a_passage_named_with_another_agent_as_parent_is_not_found_and_stays(
    passages: Passages,
) -> None:
    actor, agent_id = await seeded(passages)
    other = new_agent_id()
    with acting_as(actor):
        (hit,) = await search(passages, agent_id, "sushi", top_k=1)
        passage_id = hit.passage.id
        for call in (
            passages.GetPassage(passage_pb2.GetPassageRequest(passage_id=passage_id, agent_id=other)),
            passages.DeletePassage(passage_pb2.DeletePassageRequest(passage_id=passage_id, agent_id=other)),
        ):
            with pytest.raises(NotFound) as missing:
                await call
            assert missing.value.reason == "PASSAGE_NOT_FOUND"
        mine = await passages.GetPassage(
            passage_pb2.GetPassageRequest(passage_id=passage_id, agent_id=agent_id)
        )
        assert mine.passage.text == hit.passage.text
        await passages.DeletePassage(
            passage_pb2.DeletePassageRequest(passage_id=passage_id, agent_id=agent_id)
        )
        with pytest.raises(NotFound):
            await passages.GetPassage(passage_pb2.GetPassageRequest(passage_id=passage_id))


async def test_passages_of_another_org_are_not_found_nor_searched(passages: Passages) -> None:
    actor, agent_id = await seeded(passages)
    with acting_as(actor):
        (hit,) = await search(passages, agent_id, "sushi", top_k=1)
    with acting_as(new_actor()):
        with pytest.raises(NotFound):
            await passages.GetPassage(passage_pb2.GetPassageRequest(passage_id=hit.passage.id))
        with pytest.raises(NotFound):
            await passages.DeletePassage(passage_pb2.DeletePassageRequest(passage_id=hit.passage.id))
        assert await search(passages, agent_id, "sushi") == []
    with acting_as(actor):
        assert (
            await passages.GetPassage(passage_pb2.GetPassageRequest(passage_id=hit.passage.id))
        ).passage.id


@pytest.mark.parametrize(
    ("text", "field"),
    [("", "text"), ("   \n  ", "text"), ("x" * 100_001, "text"), ("nul \x00 inside", "text")],
)
async def test_bad_text_is_refused_and_nothing_is_stored(passages: Passages, text: str, field: str) -> None:
    agent_id = new_agent_id()
    with acting_as(new_actor()):
        with pytest.raises(InvalidArgument) as refused:
            await insert(passages, agent_id, text)
        listed = await passages.ListPassages(passage_pb2.ListPassagesRequest(agent_id=agent_id))
    assert field in [v.field for v in refused.value.violations]
    assert list(listed.passages) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "q" * 10_001}, "query"),
        ({"query": "ok", "top_k": 101}, "top_k"),
        ({"query": "ok", "tags": [""]}, "tags[0]"),
        (
            {
                "query": "ok",
                "start_time": stamp(datetime(2021, 1, 1, tzinfo=UTC)),
                "end_time": stamp(datetime(2020, 1, 1, tzinfo=UTC)),
            },
            "end_time",
        ),
    ],
)
async def test_bad_search_is_refused_with_the_field_named(
    passages: Passages, fields: dict[str, object], field: str
) -> None:
    with acting_as(new_actor()), pytest.raises(InvalidArgument) as refused:
        await passages.SearchPassages(passage_pb2.SearchPassagesRequest(agent_id=new_agent_id(), **fields))
    assert field in [v.field for v in refused.value.violations]


async def test_unknown_embedding_model_is_refused_before_anything_is_stored(passages: Passages) -> None:
    agent_id = new_agent_id()
    with acting_as(new_actor()):
        with pytest.raises(NotFound) as refused:
            await insert(passages, agent_id, "text", embedding_model="local/no-such-model")
        listed = await passages.ListPassages(passage_pb2.ListPassagesRequest(agent_id=agent_id))
    assert refused.value.reason == "MODEL_NOT_FOUND"
    assert list(listed.passages) == []


async def test_search_never_compares_vectors_of_two_models(
    passages: Passages, archival_memory: Served
) -> None:
    actor, agent_id = await seeded(passages)
    # A passage embedded by another model (stored as a store-level row; this server has one model only).
    store = memory_app(archival_memory).passage_store
    await store.insert(
        actor.org_id,
        [
            NewPassage(
                id="passage-other-model",
                text="A vector from another model.",
                created_at=datetime.now(UTC),
                agent_id=agent_id,
                model="openai/text-embedding-3-small",
                vector=np.ones(8, np.float32) / np.sqrt(8),
            )
        ],
    )
    with acting_as(actor):
        with pytest.raises(FailedPrecondition) as refused:
            await search(passages, agent_id, "sushi")
        keyword = await search(passages, agent_id, "sushi", mode=search_pb2.SEARCH_MODE_KEYWORD)
    assert refused.value.reason == "EMBEDDING_MODEL_MISMATCH"
    assert refused.value.metadata["stored_model"] == "openai/text-embedding-3-small"
    assert [m.passage.text for m in keyword] == [FACTS[0]]


async def dated(passages: Passages, agent_id: str, rows: list[tuple[datetime, str, str]]) -> None:
    for when, speaker, text in rows:
        await insert(passages, agent_id, text, create_time=stamp(when), speaker=speaker)


GARDEN = [
    (datetime(2024, 1, 14, 19, tzinfo=UTC), "", "The tomatoes in the garden are finally red."),
    (datetime(2024, 3, 9, 19, tzinfo=UTC), "", "Slugs ate half of the lettuce in the garden."),
    (datetime(2024, 5, 20, 19, tzinfo=UTC), "", "I planted sunflowers along the garden fence."),
    (datetime(2024, 7, 2, 19, tzinfo=UTC), "", "The garden hose burst this morning."),
    (datetime(2024, 3, 10, 19, tzinfo=UTC), "", "I watched a documentary about whales."),
]


async def test_a_question_naming_a_month_ranks_what_was_said_that_month_first(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        await dated(passages, agent_id, GARDEN)
        in_march = await search(passages, agent_id, "What happened in the garden in March?", top_k=3)
        in_may_2024 = await search(passages, agent_id, "news about the garden from May 2024", top_k=3)
    assert in_march[0].passage.text == "Slugs ate half of the lettuce in the garden."
    assert in_may_2024[0].passage.text == "I planted sunflowers along the garden fence."


async def test_a_period_named_in_the_query_ranks_but_never_hides(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        await dated(passages, agent_id, GARDEN)
        found = await search(passages, agent_id, "What happened in the garden in October?", top_k=4)
    assert {m.passage.text for m in found} == {text for _, _, text in GARDEN[:4]}


async def test_a_question_about_now_prefers_the_newest_of_two_statements(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        await dated(
            passages,
            agent_id,
            [
                (datetime(2023, 2, 1, tzinfo=UTC), "", "I work at Northwind as a data analyst."),
                (datetime(2023, 6, 1, tzinfo=UTC), "", "The weather was awful all week."),
                (
                    datetime(2024, 6, 1, tzinfo=UTC),
                    "",
                    "I quit Northwind, I work at Quillion as a designer now.",
                ),
            ],
        )
        now = await search(passages, agent_id, "Where do I work now?", top_k=2)
        before = await search(passages, agent_id, "Where did I work originally?", top_k=2)
    assert now[0].passage.text.startswith("I quit Northwind")
    assert before[0].passage.text == "I work at Northwind as a data analyst."


async def test_a_speakers_name_in_the_query_prefers_that_speakers_passages(passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    when = datetime(2024, 4, 2, 18, tzinfo=UTC)
    with acting_as(actor):
        await dated(
            passages,
            agent_id,
            [
                (when, "Tom", "Hi Maya! How was your week?"),
                (
                    when + timedelta(minutes=1),
                    "Maya",
                    "Great, I started a new job as an architect at Northwind.",
                ),
                (when + timedelta(minutes=2), "Tom", "Nice! I started a new job too, as a chef at Quillion."),
            ],
        )
        found = await search(passages, agent_id, "What new job did Maya start?", top_k=3)
        rrf_like = await search(
            passages, agent_id, "What new job did Maya start?", mode=search_pb2.SEARCH_MODE_VECTOR
        )
    assert found[0].passage.speaker == "Maya"
    assert found[0].passage.text.startswith("Great, I started a new job as an architect")
    # Vector search alone is drawn to the greeting that only shares the name.
    assert rrf_like[0].passage.text == "Hi Maya! How was your week?"

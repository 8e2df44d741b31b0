"""The Weaviate passage store as Weaviate sees it: collections, tenants and objects on the wire-level fake.

The shared archival and source-file suites run on this store too (memory_with_embeddings); these tests
look inside the fake to check what those suites cannot see: where objects live, that deletes cascade,
that a refused write leaves nothing behind and that a stray object is never returned.
"""

# The fixtures come from memory_with_embeddings and are named as arguments (pytest's way).

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mnemo.memory.v1 import passage_pb2, passage_pb2_grpc, source_pb2, source_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_core.db import Database
from mnemo_core.errors import Unavailable
from mnemo_memory.app import MemoryApp, weaviate_store
from mnemo_memory.passage_store_weaviate import (
    PREFIX,
    WeaviateConfig,
    WeaviatePassageStore,
    collection_name,
    tenant_name,
)
from mnemo_memory.settings import MemorySettings
from tests.fakes.weaviate_server import FakeWeaviate, RunningFake, StoredObject, running_fake
from tests.service.conftest import Served, clean_environment, new_actor, new_agent_id
from tests.service.memory_with_embeddings import memory_app, memory_with_llm
from tests.service.test_sources_files import MANUAL, finished, new_source, upload

MODEL, DIM = "local/all-minilm-l6-v2", 384
COLLECTION = collection_name(MODEL, DIM)


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    """A fake of this module's own, so its contents are this module's passages only."""
    yield from running_fake()


@pytest.fixture(scope="module")
async def memory(
    tmp_path_factory: pytest.TempPathFactory, llm_service: Served, fake: RunningFake
) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("memory-weaviate")
    async with memory_with_llm(
        home,
        llm_service.address,
        passage_store="weaviate",
        weaviate_url=fake.url,
        weaviate_grpc_address=fake.grpc_address,
    ) as served:
        yield served


def objects(fake: RunningFake, org_id: str) -> list[StoredObject]:
    return fake.fake.stored(COLLECTION, tenant_name(org_id))


def passage_ids(fake: RunningFake, org_id: str, **where: str) -> set[str]:
    return {
        str(o.properties["passage_id"])
        for o in objects(fake, org_id)
        if all(o.properties.get(key) == value for key, value in where.items())
    }


async def create(passages: passage_pb2_grpc.PassageServiceAsyncStub, agent_id: str, text: str) -> str:
    response = await passages.CreatePassages(passage_pb2.CreatePassagesRequest(agent_id=agent_id, text=text))
    return response.passages[0].id


async def found(passages: passage_pb2_grpc.PassageServiceAsyncStub, agent_id: str, query: str) -> list[str]:
    response = await passages.SearchPassages(
        passage_pb2.SearchPassagesRequest(agent_id=agent_id, query=query)
    )
    return [match.passage.id for match in response.matches]


async def test_passages_sit_in_one_collection_per_model_with_one_tenant_per_organization(
    memory: Served, fake: RunningFake
) -> None:
    passages = memory.stub(passage_pb2_grpc.PassageServiceStub)
    first, second = new_actor(), new_actor()
    agent_id = new_agent_id()  # the same agent id in both organizations
    with acting_as(first):
        mine = {await create(passages, agent_id, "The lighthouse keeper feeds the gulls at dawn.")}
        mine.add(await create(passages, agent_id, "Our invoice INV-4471 was paid on Friday."))
    with acting_as(second):
        theirs = {await create(passages, agent_id, "The lighthouse keeper feeds the gulls at dawn.")}
        seen_by_second = await found(passages, agent_id, "who feeds the gulls at the lighthouse?")

    ours = [name for name in fake.fake.collections if name.startswith(PREFIX)]
    assert ours == [COLLECTION]
    assert fake.fake.collections[COLLECTION].config["description"] == MODEL
    assert {tenant_name(first.org_id), tenant_name(second.org_id)} <= set(
        fake.fake.collections[COLLECTION].tenants
    )
    assert passage_ids(fake, first.org_id) == mine
    assert passage_ids(fake, second.org_id) == theirs
    # Same agent id, same text: each organization's search sees its own tenant's object only.
    assert seen_by_second == list(theirs)


async def test_purging_an_agent_deletes_its_objects_and_no_one_elses(
    memory: Served, fake: RunningFake
) -> None:
    passages = memory.stub(passage_pb2_grpc.PassageServiceStub)
    actor, gone, kept = new_actor(), new_agent_id(), new_agent_id()
    with acting_as(actor):
        await create(passages, gone, "Buy oat milk and coffee beans.")
        await create(passages, gone, "The dentist appointment is on the 14th.")
        stays = await create(passages, kept, "Buy oat milk and coffee beans.")
        assert len(passage_ids(fake, actor.org_id, agent_id=gone)) == 2
        await passages.PurgeAgentPassages(passage_pb2.PurgeAgentPassagesRequest(agent_id=gone))
        after = await found(passages, kept, "oat milk")
    assert passage_ids(fake, actor.org_id, agent_id=gone) == set()
    assert passage_ids(fake, actor.org_id) == {stays}
    assert after == [stays]


async def test_deleting_a_passage_deletes_its_object(memory: Served, fake: RunningFake) -> None:
    passages = memory.stub(passage_pb2_grpc.PassageServiceStub)
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        doomed = await create(passages, agent_id, "The spare key is under the blue flowerpot.")
        other = await create(passages, agent_id, "The wifi password is on the fridge.")
        await passages.DeletePassage(passage_pb2.DeletePassageRequest(passage_id=doomed, agent_id=agent_id))
    assert passage_ids(fake, actor.org_id) == {other}


async def test_deleting_a_file_and_then_its_source_deletes_their_chunks_objects(
    memory: Served, fake: RunningFake
) -> None:
    sources = memory.stub(source_pb2_grpc.SourceServiceStub)
    actor = new_actor()
    with acting_as(actor):
        source = await new_source(sources)
        first = await upload(sources, source.id, "manual.md", MANUAL.encode())
        second = await upload(sources, source.id, "notes.md", b"The grinder burrs are replaced yearly.")
        for uploaded in (first, second):
            assert (await finished(sources, uploaded.job.id)).status == source_pb2.JOB_STATUS_COMPLETED
        assert passage_ids(fake, actor.org_id, file_id=first.file.id)
        of_second = passage_ids(fake, actor.org_id, file_id=second.file.id)
        await sources.DeleteFile(source_pb2.DeleteFileRequest(file_id=first.file.id))
        after_file = passage_ids(fake, actor.org_id, source_id=source.id)
        await sources.DeleteSource(source_pb2.DeleteSourceRequest(source_id=source.id))
    assert of_second
    assert after_file == of_second  # the first file's objects went with it
    assert passage_ids(fake, actor.org_id, source_id=source.id) == set()


async def test_a_write_weaviate_refuses_is_unavailable_and_stores_nothing(
    memory: Served, fake: RunningFake
) -> None:
    passages = memory.stub(passage_pb2_grpc.PassageServiceStub)
    actor, agent_id = new_actor(), new_agent_id()
    fake.fake.refuse_writes = "disk full"
    try:
        with acting_as(actor), pytest.raises(Unavailable) as refused:
            await create(passages, agent_id, "This never gets stored.")
    finally:
        fake.fake.refuse_writes = None
    with acting_as(actor):
        listed = await passages.ListPassages(passage_pb2.ListPassagesRequest(agent_id=agent_id))
    assert refused.value.reason == "PASSAGE_STORE_UNAVAILABLE"
    assert "disk full" in str(refused.value)
    assert list(listed.passages) == []


async def test_an_object_whose_row_is_gone_is_never_returned(memory: Served, fake: RunningFake) -> None:
    passages = memory.stub(passage_pb2_grpc.PassageServiceStub)
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        real = await create(passages, agent_id, "The boat leaves the harbour at seven.")
    # A stray copy (as a write whose SQL commit failed would leave): same vector and words, no row.
    [stored] = objects(fake, actor.org_id)
    ghost_id = str(uuid.uuid4())
    with fake.fake.lock:
        fake.fake.objects(COLLECTION, tenant_name(actor.org_id))[ghost_id] = dataclasses.replace(
            stored, id=ghost_id, properties={**stored.properties, "passage_id": "passage-ghost"}
        )
    with acting_as(actor):
        hits = await found(passages, agent_id, "when does the boat leave the harbour?")
    assert len(objects(fake, actor.org_id)) == 2
    assert hits == [real]


async def test_weaviate_asks_for_its_api_key_and_a_wrong_one_is_unavailable(memory: Served) -> None:
    db = memory_app(memory).db
    guarded = RunningFake(FakeWeaviate(api_key="weaviate-secret"))
    guarded.start()
    try:
        wrong = WeaviatePassageStore(db, WeaviateConfig(guarded.url, guarded.grpc_address, api_key="nope"))
        with pytest.raises(Unavailable):
            await wrong.connect()
        right = WeaviatePassageStore(
            db, WeaviateConfig(guarded.url, guarded.grpc_address, api_key="weaviate-secret")
        )
        try:
            await right.connect()
            assert not await right._present(COLLECTION, "org-x")
        finally:
            await right.close()
    finally:
        guarded.stop()


def test_the_weaviate_store_needs_a_url_and_a_sql_store_its_own_database(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        with pytest.raises(ValidationError, match="MNEMO_WEAVIATE_URL"):
            MemorySettings(home=tmp_path, passage_store="weaviate")
        settings = MemorySettings(home=tmp_path, passage_store="postgres")
    with pytest.raises(ValueError, match="runs on SQLite"):
        MemoryApp(Database(settings.resolved_database_url(), schema="memory"), settings)


def test_without_the_weaviate_extra_the_store_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path, passage_store="weaviate", weaviate_url="http://127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "mnemo_memory.passage_store_weaviate", None)  # as if not installed
    with pytest.raises(RuntimeError, match="`weaviate` extra"):
        weaviate_store(Database(settings.resolved_database_url(), schema="memory"), settings)

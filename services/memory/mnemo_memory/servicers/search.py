"""Search modes and scores on the wire, shared by message (recall) and passage (archival) search."""

from __future__ import annotations

from mnemo.memory.v1 import search_pb2
from mnemo_core.proto_enums import EnumNames
from mnemo_memory.ranking import Ranked

_SEARCH_MODES = EnumNames(search_pb2.SearchMode)


def search_mode(value: search_pb2.SearchMode.ValueType) -> str:
    """Hybrid when unset; a number this build does not know is refused by the search's own check."""
    return "hybrid" if value == search_pb2.SEARCH_MODE_UNSPECIFIED else _SEARCH_MODES.name(value)


def score_to_proto(rank: Ranked) -> search_pb2.SearchScore:
    """The wire form of how a hit ranked."""
    return search_pb2.SearchScore(
        score=rank.score,
        vector_rank=rank.vector_rank,
        similarity=rank.similarity,
        keyword_rank=rank.keyword_rank,
    )

"""Settings of the memory service."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator

from mnemo_core.settings import ServiceName, ServiceSettings


class MemorySettings(ServiceSettings):
    """`MNEMO_*` env and the `[memory]` table of the config file."""

    service: ClassVar[ServiceName] = "memory"
    section: ClassVar[str] = "memory"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_MEMORY_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # Where archival passages are searched (MNEMO_PASSAGE_STORE): "" or the database's own kind ("sqlite",
    # "postgres"), or "weaviate" (rows stay in the database, vectors and words are searched in Weaviate;
    # docs/adr/0206-weaviate-passage-store.md).
    passage_store: Literal["", "sqlite", "postgres", "weaviate"] = ""
    # Weaviate's REST URL (MNEMO_WEAVIATE_URL, e.g. http://weaviate:8080), its gRPC address (host:port;
    # empty: the URL's host on port 50051) and its API key (unset: anonymous access).
    weaviate_url: str = ""
    weaviate_grpc_address: str = ""
    weaviate_api_key: SecretStr | None = None
    # Seconds a Weaviate call may take (connect, query, insert).
    weaviate_timeout_seconds: float = Field(default=30.0, gt=0)
    # Char limit of a block created without one.
    default_block_limit: int = 5000
    # Embedding model of recall (message) search, "provider/model"; empty uses the llm-gateway's default.
    recall_embedding_model: str = ""
    # How hybrid search ranks (archival, source files and recall): "contextual" (time-aware, neighbour-aware
    # weighted scoring, docs/adr/0203-contextual-hybrid-search.md) or "rrf" (the textbook reciprocal rank
    # fusion of one vector and one keyword ranking, as before).
    search_ranking: Literal["contextual", "rrf"] = "contextual"
    # Memory for in-memory vector indexes (MB); least recently used ones are dropped beyond it.
    vector_cache_mb: int = 1024
    # Largest file a source accepts (bytes).
    max_upload_bytes: int = 50 * 1024 * 1024
    # Parsing one PDF or HTML file, in a child process of its own: CPU seconds (and wall-clock seconds,
    # plus a few), address space, pages of a PDF, and bytes of text it may produce.
    file_parse_seconds: float = 120.0
    file_parse_memory_mb: int = 1024
    file_parse_max_pages: int = 2000
    file_text_max_bytes: int = 64 * 1024 * 1024
    # Versions of each block's value kept (0: all of them); older ones are deleted as the block is written.
    block_history_max_versions: int = Field(default=100, ge=0)
    # Days a block version is kept (0: no age limit); a sweep deletes older ones.
    block_history_max_age_days: float = Field(default=0, ge=0)
    # How often the sweep of old block versions runs (seconds), when there is an age limit.
    block_history_sweep_seconds: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _weaviate_needs_a_url(self) -> Self:
        if self.passage_store == "weaviate" and not self.weaviate_url:
            raise ValueError('passage_store is "weaviate" but no Weaviate URL is set (MNEMO_WEAVIATE_URL)')
        return self

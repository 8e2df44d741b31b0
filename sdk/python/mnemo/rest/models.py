"""/v1/models and /v1/usage: the models the mesh can reach, and the tokens an organization spent."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Model(BaseModel):
    """A model the mesh can reach."""

    name: str = Field(description="As agents name it: 'provider/model'.")
    provider: str
    kind: Literal["chat", "embedding", "unknown"]
    context_window: int = Field(description="Tokens; 0 when unknown.")
    max_output_tokens: int = Field(description="Tokens; 0 when unknown.")
    embedding_dimension: int = Field(description="For embedding models; 0 otherwise or when unknown.")
    reported_by_provider: bool = Field(description="False: known from the catalogue only.")


class ModelList(BaseModel):
    """The models, and the providers that did not answer when asked for theirs."""

    models: list[Model]
    unreachable_providers: list[str]


class UsageRow(BaseModel):
    """Tokens summed over one group of model calls."""

    agent_id: str | None = Field(default=None, description="When grouped by agent.")
    model: str | None = Field(default=None, description="When grouped by model.")
    day: str | None = Field(default=None, description="UTC day (YYYY-MM-DD), when grouped by day.")
    request_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

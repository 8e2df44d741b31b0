"""/v1/models and /v1/usage: the models the mesh can reach, and the tokens the organization spent."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from mnemo.llm.v1 import llm_pb2
from mnemo.rest.models import Model, ModelList, UsageRow
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import to_timestamp
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(tags=["models"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]

_KINDS = EnumNames(llm_pb2.ModelKind)
_DIMENSIONS = EnumNames(llm_pb2.UsageDimension)


@router.get("/v1/models", response_model=ModelList)
async def list_models(
    mesh: Mesh,
    provider: Annotated[str, Query(description="Only this provider's models.")] = "",
    include_provider_models: Annotated[
        bool, Query(description="Also ask the providers which models they serve (slower).")
    ] = False,
) -> ModelList:
    """Lists the models agents can use, with their context windows."""
    response = await mesh.llm.ListModels(
        llm_pb2.ListModelsRequest(provider=provider, include_provider_models=include_provider_models)
    )
    return ModelList(
        models=[
            Model(
                name=m.name,
                provider=m.provider,
                kind=_KINDS.name(m.kind) or "unknown",
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                embedding_dimension=m.embedding_dimension,
                reported_by_provider=m.reported_by_provider,
            )
            for m in response.models
        ],
        unreachable_providers=list(response.unreachable_providers),
    )


@router.get("/v1/usage", response_model=list[UsageRow])
async def usage(
    mesh: Mesh,
    group_by: Annotated[
        list[Literal["agent", "model", "day"]] | None, Query(description="Dimensions to group by.")
    ] = None,
    agent_id: str = "",
    model: str = "",
    start: Annotated[datetime | None, Query(description="Calls at or after this time.")] = None,
    end: Annotated[datetime | None, Query(description="Calls before this time.")] = None,
) -> list[UsageRow]:
    """Sums the tokens the organization's model calls spent (chat and embeddings)."""
    dimensions = list(dict.fromkeys(group_by or []))
    response = await mesh.llm.SummarizeUsage(
        llm_pb2.SummarizeUsageRequest(
            group_by=[_DIMENSIONS.value(d) for d in dimensions],
            agent_id=agent_id,
            model=model,
            start_time=to_timestamp(start),
            end_time=to_timestamp(end),
        )
    )
    return [
        UsageRow(
            agent_id=s.agent_id if "agent" in dimensions else None,
            model=s.model if "model" in dimensions else None,
            day=s.day if "day" in dimensions else None,
            request_count=s.request_count,
            prompt_tokens=s.usage.prompt_tokens,
            completion_tokens=s.usage.completion_tokens,
            total_tokens=s.usage.total_tokens,
        )
        for s in response.summaries
    ]

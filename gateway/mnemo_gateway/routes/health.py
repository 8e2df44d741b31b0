"""/v1/health: is the mesh up? No API key needed (for probes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from mnemo.rest.common import Health
from mnemo_gateway.backends import Backends, backends

router = APIRouter(tags=["health"])


@router.get("/v1/health", response_model=Health, responses={503: {"model": Health}})
async def health(mesh: Annotated[Backends, Depends(backends)]) -> JSONResponse:
    """`ok` (200) when every service is serving, else `degraded` (503) with each service's status."""
    services = await mesh.health()
    healthy = all(state == "SERVING" for state in services.values())
    body = Health(status="ok" if healthy else "degraded", services=dict(services))
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)

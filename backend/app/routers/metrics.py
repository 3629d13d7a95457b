"""GET /metrics: Prometheus exposition of every process (operators only, like /health/detailed)."""

from fastapi import APIRouter
from starlette.responses import Response

from app.deps import SettingsDep
from app.observability.metrics import render_metrics
from app.routers.health import OpsAccess

router = APIRouter(tags=["health"])


@router.get("/metrics", dependencies=[OpsAccess], include_in_schema=False)
async def metrics(settings: SettingsDep) -> Response:
    """Prometheus text format; aggregates all gunicorn workers in multiprocess mode."""
    body, content_type = render_metrics(settings.prometheus_multiproc_dir)
    return Response(body, media_type=content_type)

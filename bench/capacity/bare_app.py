"""The reference for the app's CPU per request: a bare FastAPI app with one route.

GET /api/jobs answers the bytes in BARE_BODY_FILE (the real app's cached GET /api/jobs body,
fetched by class_cost.sh) as a plain Response: no middleware, no dependencies, no logging of
its own. class_cost.sh runs it with the production command's config and worker class:
    gunicorn --config gunicorn.conf.py --pythonpath bench/capacity bare_app:app
"""

import os
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response

BODY = Path(os.environ["BARE_BODY_FILE"]).read_bytes()

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/api/jobs")
async def jobs() -> Response:
    """The stored body, as the real app's cache hit sends it (without its ETag)."""
    return Response(content=BODY, media_type="application/json")

"""A tiny app behind the real concurrency limit and RedisService, for in-process and uvicorn tests.

Run by uvicorn as `tests.middleware.concurrency_app:create_concurrency_app` (factory), configured
by the environment like the real app; CONCURRENCY_TEST_DIR is where its routes meet the test.
Every route but /health takes `name`, the test's handle on that request:

- `GET /hold?name=`: appends `name` to <dir>/<name>.started, then works until <dir>/<name>.release
  exists (at most two minutes). If its client disconnects meanwhile it creates
  <dir>/<name>.disconnected and keeps working: work a client walked away from still runs.
- `GET /stream?name=`: appends to the .started file, sends a first line, then streams until the
  release file exists (Starlette ends the stream when the client disconnects).
- `POST /upload?name=`: appends to the .started file, then reads the whole body.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from app.config import Settings
from app.middleware.concurrency_limit import ConcurrencyLimitMiddleware
from app.services.redis import RedisService

# A request of a failed test gives up after this, so no server hangs on it.
WORK_LIMIT_SECONDS = 120.0
POLL_SECONDS = 0.01


def build_concurrency_app(settings: Settings, directory: Path) -> Starlette:
    """The test app for `settings`, meeting the test in `directory`; its lifespan starts and
    closes the limiter's RedisService."""
    redis = RedisService(settings, client_name="concurrency-limit-test")

    def started(name: str) -> None:
        # One short write per line: O_APPEND keeps lines whole across processes.
        with open(directory / f"{name}.started", "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")

    def released(name: str) -> bool:
        return (directory / f"{name}.release").exists()

    async def hold(request: Request) -> PlainTextResponse:
        name = request.query_params["name"]
        started(name)
        deadline = time.monotonic() + WORK_LIMIT_SECONDS
        disconnected = False
        while not released(name) and time.monotonic() < deadline:
            if not disconnected and await request.is_disconnected():
                disconnected = True
                (directory / f"{name}.disconnected").touch()
            await asyncio.sleep(POLL_SECONDS)
        return PlainTextResponse("done")

    async def stream(request: Request) -> StreamingResponse:
        name = request.query_params["name"]
        started(name)

        async def lines() -> AsyncIterator[bytes]:
            yield b"started\n"
            deadline = time.monotonic() + WORK_LIMIT_SECONDS
            # Polled: the release is a file another process creates.
            while not released(name) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL_SECONDS)
            yield b"finished\n"

        return StreamingResponse(lines(), media_type="text/plain")

    async def upload(request: Request) -> Response:
        started(request.query_params["name"])
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=400)
        return PlainTextResponse(str(len(body)))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await redis.start()
        try:
            yield
        finally:
            await redis.close()

    app = Starlette(
        routes=[
            Route("/hold", hold),
            Route("/stream", stream),
            Route("/upload", upload, methods=["POST"]),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(ConcurrencyLimitMiddleware, settings=settings, redis=redis)
    return app


def create_concurrency_app() -> Starlette:
    """uvicorn factory: settings and CONCURRENCY_TEST_DIR from the environment."""
    return build_concurrency_app(Settings(), Path(os.environ["CONCURRENCY_TEST_DIR"]))

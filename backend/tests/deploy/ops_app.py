"""The web app plus test-only routes, served by gunicorn in the multi-process ops tests.

`GET /ops-test/slow?seconds=` sleeps without blocking the loop and first appends its request id
to OPS_TEST_STARTED_FILE, so a test knows exactly which requests the server had accepted.
`GET /ops-test/stream?seconds=` does the same, but sends its first line before it sleeps (a
response already under way). `GET /ops-test/block` blocks its worker's event loop until
OPS_TEST_RELEASE_FILE exists (that worker accepts nothing meanwhile). `GET /ops-test/pid` names
the worker that answered.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from app.main import create_app
from app.observability.context import current_request

app = create_app()
_STARTED_FILE = os.environ.get("OPS_TEST_STARTED_FILE")
_RELEASE_FILE = os.environ.get("OPS_TEST_RELEASE_FILE")


def _record_start() -> None:
    context = current_request()
    if _STARTED_FILE and context is not None:
        # One short write per line: O_APPEND keeps lines whole across worker processes.
        with open(_STARTED_FILE, "a", encoding="utf-8") as handle:
            handle.write(context.request_id + "\n")


async def slow(seconds: float) -> dict[str, object]:
    _record_start()
    await asyncio.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


async def stream(seconds: float) -> StreamingResponse:
    _record_start()

    async def lines() -> AsyncIterator[bytes]:
        yield b"started\n"
        await asyncio.sleep(seconds)
        yield b"finished\n"

    return StreamingResponse(lines(), media_type="text/plain")


def _wait_for_release() -> None:
    deadline = time.monotonic() + 60
    while _RELEASE_FILE and not os.path.exists(_RELEASE_FILE) and time.monotonic() < deadline:
        time.sleep(0.01)


async def block() -> dict[str, int]:
    """Blocks the worker's loop until OPS_TEST_RELEASE_FILE exists (at most a minute)."""
    _record_start()
    _wait_for_release()  # synchronously, on purpose: the loop accepts nothing meanwhile
    return {"pid": os.getpid()}


async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


app.add_api_route("/ops-test/slow", slow)
app.add_api_route("/ops-test/stream", stream)
app.add_api_route("/ops-test/block", block)
app.add_api_route("/ops-test/pid", pid)

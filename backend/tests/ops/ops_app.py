"""The web app plus test-only routes, served by gunicorn in the multi-process ops tests.

`GET /ops-test/slow?seconds=` sleeps without blocking the loop and first appends its request id
to OPS_TEST_STARTED_FILE, so a test knows exactly which requests the server had accepted.
`GET /ops-test/block?seconds=` blocks its worker's event loop (that worker accepts nothing
meanwhile). `GET /ops-test/pid` names the worker that answered.
"""

import asyncio
import os
import time

from fastapi import Request

from app.main import create_app
from app.middleware.request_context import current_request

app = create_app()
_STARTED_FILE = os.environ.get("OPS_TEST_STARTED_FILE")


async def slow(seconds: float, request: Request) -> dict[str, object]:
    context = current_request()
    if _STARTED_FILE and context is not None:
        # One short write per line: O_APPEND keeps lines whole across worker processes.
        with open(_STARTED_FILE, "a", encoding="utf-8") as handle:  # noqa: ASYNC230
            handle.write(context.request_id + "\n")
    await asyncio.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


async def block(seconds: float) -> dict[str, int]:
    time.sleep(seconds)  # noqa: ASYNC251 (blocking the loop is what this route is for)
    return {"pid": os.getpid()}


async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


app.add_api_route("/ops-test/slow", slow)
app.add_api_route("/ops-test/block", block)
app.add_api_route("/ops-test/pid", pid)

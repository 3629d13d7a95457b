"""The web app plus one slow route, served by uvicorn in the load shedder's server test.

`GET /overload-test/report?seconds=` waits without blocking the loop, like a report or an AI
call that takes its time; the test's OVERLOAD_PRIORITY_PATHS makes it background. Everything
else is the real app, its middleware stack and its routes.
"""

import asyncio

from fastapi import Query

from app.main import create_app

app = create_app()


@app.get("/overload-test/report")
async def slow_report(seconds: float = Query(1.0, ge=0, le=10)) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}

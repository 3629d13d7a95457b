"""The real web app plus two reference routes serving the same 20 newest jobs.

- `/api/jobs`       our route (Core select of the needed columns, autocommit, orjson once)
- `/bench/raw`      a raw asyncpg pool query serialised with orjson (the ceiling)
- `/bench/orm`      a plain SQLAlchemy 2 ORM + pydantic route (what most apps write)

Run with BENCH_DATABASE_URL=postgresql+asyncpg://... (see run.sh). With BENCH_REDIS_URL set,
`/api/jobs` is the cached route (bench/cache/run.py); the reference routes are never cached.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import orjson
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from starlette.responses import Response

from app.config import Settings
from app.deps import SessionDep
from app.gunicorn_worker import tune_garbage_collector
from app.main import create_app
from app.models import Job

DATABASE_URL = os.environ["BENCH_DATABASE_URL"]
RAW_SQL = (
    "SELECT id, title, company, location, job_type, description, skills, created_at FROM jobs "
    "WHERE active ORDER BY created_at DESC, id DESC LIMIT 21"
)

settings = Settings(
    database_url=DATABASE_URL,
    jwt_secret="bench-secret-bench-secret-bench-secret-00",
    redis_url=os.environ.get("BENCH_REDIS_URL"),
    rate_limit_enabled=False,
    cache_enabled="BENCH_REDIS_URL" in os.environ,
    log_level="WARNING",
    enable_request_logging=False,
)
app: FastAPI = create_app(settings)
_app_lifespan = app.router.lifespan_context


@asynccontextmanager
async def lifespan(application: FastAPI) -> AsyncIterator[None]:
    async with _app_lifespan(application):
        application.state.raw_pool = await asyncpg.create_pool(
            DATABASE_URL.replace("postgresql+asyncpg", "postgresql"), min_size=10, max_size=20
        )
        # The production worker's GC settings (app/gunicorn_worker.py), for every route alike.
        tune_garbage_collector()
        try:
            yield
        finally:
            await application.state.raw_pool.close()


app.router.lifespan_context = lifespan


class JobModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    company: str
    location: str
    job_type: str
    description: str
    skills: list[str]
    created_at: datetime


class JobPage(BaseModel):
    items: list[JobModel]
    page: int
    page_size: int
    has_more: bool


@app.get("/bench/raw")
async def raw_route() -> Response:
    async with app.state.raw_pool.acquire() as connection:
        rows = await connection.fetch(RAW_SQL)
    items = [dict(row) | {"skills": orjson.loads(row["skills"])} for row in rows[:20]]
    body = {"items": items, "page": 1, "page_size": 20, "has_more": len(rows) > 20}
    return Response(orjson.dumps(body), media_type="application/json")


@app.get("/bench/orm")
async def orm_route(session: SessionDep) -> JobPage:
    jobs = (
        await session.scalars(
            select(Job)
            .where(Job.active.is_(True))
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(21)
        )
    ).all()
    return JobPage(
        items=[JobModel.model_validate(job) for job in jobs[:20]],
        page=1,
        page_size=20,
        has_more=len(jobs) > 20,
    )

"""vector-index: upsert a candidate's vector (idempotent by candidate id)."""

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.worker.context import JobRun, WorkerContext
from app.worker.tasks.resume_parse import MAX_INDEXED_TEXT_CHARS


class VectorIndexPayload(BaseModel):
    candidate_id: int
    text: str = Field(max_length=MAX_INDEXED_TEXT_CHARS * 2)
    metadata: dict[str, str | int | float | list[str]] = Field(default_factory=dict)


async def run(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Index the candidate."""
    payload = job.parsed(VectorIndexPayload)
    await ctx.vector_index.upsert_candidate(payload.candidate_id, payload.text, payload.metadata)
    return None

"""What a job may use: the process's resources, and the job being run."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.config import Settings
from app.database import Database
from app.services.ai import AIService
from app.services.cache import Cache
from app.services.job_queue import JobQueue
from app.services.storage import Storage
from app.services.vector_search import VectorIndex

PayloadT = TypeVar("PayloadT", bound=BaseModel)

_DERIVED_JOB_NAMESPACE = uuid.UUID("8f0f3c1e-7f3a-4d0e-9c44-2f7c1b0f6a11")


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """The resources handlers use (the app's, created in its lifespan)."""

    settings: Settings
    database: Database
    cache: Cache
    storage: Storage
    ai: AIService
    vector_index: VectorIndex
    jobs: JobQueue


@dataclass(frozen=True, slots=True)
class JobRun:
    """A decoded job about to run."""

    task: str
    payload: dict[str, Any]
    id: str
    key: str
    message_id: str | None
    scheduled_at: datetime | None = None

    def parsed(self, model: type[PayloadT]) -> PayloadT:
        """The payload as `model`; PermanentJobError when it does not validate."""
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(part) for part in err["loc"]) for err in exc.errors())
            raise PermanentJobError(f"invalid {self.task} payload ({fields})") from None


class PermanentJobError(Exception):
    """The job can never succeed; nothing it did is kept, the reason is recorded."""


def derived_job_id(parent_id: str, task: str) -> str:
    """A stable id for a job queued by another job, so its redeliveries queue the same job."""
    return uuid.uuid5(_DERIVED_JOB_NAMESPACE, f"{parent_id}:{task}").hex

"""Job bodies."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.models.job import JobType
from app.schemas.common import StrictModel

Skill = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class JobOut(BaseModel):
    id: int
    title: str
    company: str
    location: str
    job_type: str
    description: str
    skills: list[str]
    created_at: datetime


class AdminJobOut(JobOut):
    active: bool


class JobListOut(BaseModel):
    items: list[JobOut]
    page: int
    page_size: int
    has_more: bool


class JobCreateIn(StrictModel):
    title: str = Field(min_length=1, max_length=200)
    company: str = Field(min_length=1, max_length=200)
    location: str = Field(min_length=1, max_length=200)
    job_type: JobType
    description: str = Field(min_length=1, max_length=20_000)
    skills: list[Skill] = Field(default_factory=list, max_length=50)
    active: bool = True


class JobUpdateIn(StrictModel):
    title: str | None = Field(None, min_length=1, max_length=200)
    company: str | None = Field(None, min_length=1, max_length=200)
    location: str | None = Field(None, min_length=1, max_length=200)
    job_type: JobType | None = None
    description: str | None = Field(None, min_length=1, max_length=20_000)
    skills: list[Skill] | None = Field(None, max_length=50)
    active: bool | None = None

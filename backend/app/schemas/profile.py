"""Candidate profile and resume bodies."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import StrictModel

ResumeStatus = Literal["none", "uploaded", "queued", "processing", "parsed", "failed"]
Skill = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class ProfileOut(BaseModel):
    id: int
    email: str
    full_name: str
    phone: str | None
    location: str | None
    summary: str | None
    skills: list[str]
    experience_years: int | None
    resume_status: ResumeStatus
    resume_filename: str | None
    updated_at: datetime


class ProfileUpdateIn(StrictModel):
    full_name: str | None = Field(None, min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=40)
    location: str | None = Field(None, max_length=200)
    summary: str | None = Field(None, max_length=5000)
    skills: list[Skill] | None = Field(None, max_length=50)
    experience_years: int | None = Field(None, ge=0, le=70)


class ResumeStatusOut(BaseModel):
    status: ResumeStatus
    filename: str | None
    uploaded_at: datetime | None
    parsed_at: datetime | None
    error: str | None

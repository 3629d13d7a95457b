"""Admin bodies: dashboard, candidates, results and AI question generation."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.common import StrictModel
from app.schemas.profile import ResumeStatus


class DashboardOut(BaseModel):
    candidates: int
    active_jobs: int
    active_tests: int
    attempts_in_progress: int
    attempts_completed: int
    average_score_percent: float | None
    resumes_parsed: int


class CandidateOut(BaseModel):
    id: int
    email: str
    full_name: str
    location: str | None
    summary: str | None
    skills: list[str]
    experience_years: int | None
    resume_status: ResumeStatus
    created_at: datetime


class CandidateListOut(BaseModel):
    items: list[CandidateOut]
    page: int
    page_size: int
    has_more: bool


class CandidateMatchOut(CandidateOut):
    score: float


class CandidateSearchOut(BaseModel):
    query: str
    items: list[CandidateMatchOut]


class ResultRowOut(BaseModel):
    attempt_id: int
    candidate_id: int
    candidate_name: str
    candidate_email: str
    test_id: int
    test_title: str
    score: float
    max_score: float
    score_percent: float
    completed_at: datetime


class ResultListOut(BaseModel):
    items: list[ResultRowOut]
    page: int
    page_size: int
    has_more: bool


MaxAttempts = Annotated[int, Field(ge=1, le=100)]
RetakeCooldownMinutes = Annotated[int, Field(ge=0, le=365 * 24 * 60)]


class AssessmentPolicyIn(StrictModel):
    """PATCH a test's attempt policy: the fields sent change; null restores the default."""

    max_attempts: MaxAttempts | None = None
    retake_cooldown_minutes: RetakeCooldownMinutes | None = None


class AdminAssessmentOut(BaseModel):
    id: int
    title: str
    description: str | None
    duration_minutes: int
    active: bool
    # The test's own policy; null: the ASSESSMENT_* settings' default applies.
    max_attempts: int | None
    retake_cooldown_minutes: int | None


class AIGenerateIn(StrictModel):
    topic: str = Field(min_length=2, max_length=200)
    count: int = Field(5, ge=1, le=20)
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    create_test: bool = False
    title: str | None = Field(None, min_length=1, max_length=200)
    duration_minutes: int = Field(30, ge=1, le=24 * 60)
    # Attempt policy of the created test; null takes the ASSESSMENT_* settings' default.
    max_attempts: MaxAttempts | None = None
    retake_cooldown_minutes: RetakeCooldownMinutes | None = None

    @model_validator(mode="after")
    def _title_when_creating(self) -> "AIGenerateIn":
        if self.create_test and not self.title:
            raise ValueError("title is required when create_test is true")
        return self


class GeneratedQuestionOut(BaseModel):
    text: str
    options: list[str]
    correct_answer: str
    points: int


class AIGenerateOut(BaseModel):
    topic: str
    questions: list[GeneratedQuestionOut]
    test_id: int | None

"""Timed test bodies."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import ResourceId, StrictModel

AttemptStatus = Literal["in_progress", "completed", "abandoned"]


class AssessmentSummaryOut(BaseModel):
    id: int
    title: str
    description: str | None
    duration_minutes: int
    question_count: int
    # The test's attempt policy (its own, or the deployment's default).
    max_attempts: int
    retake_cooldown_minutes: int
    # The caller's attempts at it.
    attempts_used: int
    attempts_remaining: int
    attempt_in_progress: bool
    # Whether POST /start would start or resume an attempt now.
    can_start: bool
    # When the retake cooldown ends, while it runs (null otherwise).
    next_attempt_at: datetime | None


class QuestionOut(BaseModel):
    id: int
    position: int
    text: str
    options: list[str]
    points: int


class StartIn(StrictModel):
    test_id: ResourceId


class AttemptOut(BaseModel):
    attempt_id: int
    test_id: int
    status: AttemptStatus
    started_at: datetime
    expires_at: datetime
    questions: list[QuestionOut]


class AnswerIn(StrictModel):
    question_id: ResourceId
    # One of the question's options exactly (surrounding whitespace is stripped; case counts),
    # or free text for a question without options.
    answer_text: str = Field(min_length=1, max_length=5000)


class AnswerOut(BaseModel):
    attempt_id: int
    question_id: int
    answered_at: datetime


class SubmitIn(StrictModel):
    attempt_id: ResourceId
    answers: list[AnswerIn] = Field(min_length=1, max_length=500)


class SubmitOut(BaseModel):
    attempt_id: int
    saved: int


class CompleteIn(StrictModel):
    attempt_id: ResourceId


class ResultOut(BaseModel):
    """The total only: which answers were right is never shown to the candidate."""

    attempt_id: int
    test_id: int
    status: AttemptStatus
    score: float
    max_score: float
    completed_at: datetime

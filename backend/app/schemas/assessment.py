"""Timed test bodies."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import StrictModel

AttemptStatus = Literal["in_progress", "completed", "abandoned"]


class AssessmentSummaryOut(BaseModel):
    id: int
    title: str
    description: str | None
    duration_minutes: int
    question_count: int


class QuestionOut(BaseModel):
    id: int
    position: int
    text: str
    options: list[str]
    points: int


class StartIn(StrictModel):
    test_id: int = Field(ge=1)


class AttemptOut(BaseModel):
    attempt_id: int
    test_id: int
    status: AttemptStatus
    started_at: datetime
    expires_at: datetime
    questions: list[QuestionOut]


class AnswerIn(StrictModel):
    question_id: int = Field(ge=1)
    answer_text: str = Field(min_length=1, max_length=5000)


class AnswerOut(BaseModel):
    attempt_id: int
    question_id: int
    answered_at: datetime


class SubmitIn(StrictModel):
    attempt_id: int = Field(ge=1)
    answers: list[AnswerIn] = Field(min_length=1, max_length=500)


class SubmitOut(BaseModel):
    attempt_id: int
    saved: int


class CompleteIn(StrictModel):
    attempt_id: int = Field(ge=1)


class ResultOut(BaseModel):
    attempt_id: int
    test_id: int
    status: AttemptStatus
    score: float
    max_score: float
    completed_at: datetime

"""Timed tests ("assessments"), their questions, candidates' attempts and answers.

Classes avoid a ``Test`` prefix so pytest never mistakes them for test classes.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow


class Assessment(Base):
    __tablename__ = "tests"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    duration_minutes: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=True, index=True)
    # Attempt policy: how many attempts a candidate may start, and how long after finishing one
    # before the next; NULL takes the ASSESSMENT_* settings' defaults.
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    retake_cooldown_minutes: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Question(Base):
    __tablename__ = "questions"
    __table_args__ = (Index("ix_questions_test_position", "test_id", "position"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    test_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("tests.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    options: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    correct_answer: Mapped[str] = mapped_column(Text)
    points: Mapped[int] = mapped_column(Integer, default=1)


class Attempt(Base):
    __tablename__ = "test_attempts"
    __table_args__ = (
        CheckConstraint("status IN ('in_progress', 'completed', 'abandoned')", name="status"),
        # At most one open attempt per candidate and test, enforced by the database.
        Index(
            "uq_test_attempts_open",
            "user_id",
            "test_id",
            unique=True,
            postgresql_where=text("status = 'in_progress'"),
            sqlite_where=text("status = 'in_progress'"),
        ),
        Index("ix_test_attempts_user_started", "user_id", "started_at"),
        Index("ix_test_attempts_status_expires", "status", "expires_at"),
        Index("ix_test_attempts_status_completed", "status", "completed_at"),
        Index("ix_test_attempts_test_id", "test_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    test_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("tests.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="in_progress")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    score: Mapped[float | None] = mapped_column(Float)
    max_score: Mapped[float | None] = mapped_column(Float)


class AttemptAnswer(Base):
    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("attempt_id", "question_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("test_attempts.id", ondelete="CASCADE")
    )
    question_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("questions.id", ondelete="CASCADE"), index=True
    )
    answer_text: Mapped[str] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

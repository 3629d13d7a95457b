"""The worker tier's bookkeeping: processed jobs, failed jobs, the email outbox, daily reports,
and the ledger of dead-letter messages replayed by `python -m ops.dlq_replay`."""

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, UTCDateTime, utcnow


class ProcessedJob(Base):
    """One row per job whose work is done (or rejected for good): the idempotency record.

    ``key`` is ``job:<id>`` for queued jobs, ``cron:<task>:<scheduled-at>`` for scheduled ones
    and ``msg:<sqs id>`` for messages without a usable id. It is inserted in the same transaction
    as the job's effects, so a second delivery finds it (or waits on it) and does nothing.
    """

    __tablename__ = "processed_jobs"
    __table_args__ = (CheckConstraint("status IN ('done', 'rejected')", name="status"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    task: Mapped[str] = mapped_column(String(50))
    message_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default="done")
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class FailedJob(Base):
    """A job that was rejected (never retried) or gave up (sent to the dead-letter queue)."""

    __tablename__ = "failed_jobs"
    __table_args__ = (Index("ix_failed_jobs_task_failed", "task", "failed_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), index=True)
    task: Mapped[str] = mapped_column(String(50))
    message_id: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    # The message body as received (truncated), so the job can be inspected or replayed.
    body: Mapped[str] = mapped_column(Text)
    receive_count: Mapped[int] = mapped_column(Integer)
    dead_lettered: Mapped[bool] = mapped_column(default=False)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailOutbox(Base):
    """Every email the worker handled: sent by SMTP, or logged here when SMTP is not configured."""

    __tablename__ = "email_outbox"
    __table_args__ = (CheckConstraint("status IN ('sent', 'logged')", name="status"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    # Kept only for logged mail (the development stand-in); sent mail's body is not stored.
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class DailyReport(Base):
    """Aggregates for one UTC day, written by the generate-reports cron task."""

    __tablename__ = "daily_reports"

    report_date: Mapped[date] = mapped_column(Date, primary_key=True)
    new_candidates: Mapped[int] = mapped_column(Integer)
    resumes_uploaded: Mapped[int] = mapped_column(Integer)
    resumes_parsed: Mapped[int] = mapped_column(Integer)
    attempts_started: Mapped[int] = mapped_column(Integer)
    attempts_completed: Mapped[int] = mapped_column(Integer)
    # Mean percentage score of the day's completed attempts (None when there were none).
    average_score_percent: Mapped[float | None] = mapped_column(Float)
    jobs_posted: Mapped[int] = mapped_column(Integer)
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DlqReplay(Base):
    """One dead-letter message sent back to its source queue by ``python -m ops.dlq_replay``.

    Keyed by the message's id in the dead-letter queue: a replay that finds its id here sent
    it already and only deletes it from the DLQ (see ops/dlq_replay.py for why that order is
    safe). A DLQ keeps a message at most its retention period (14 days at most), so older rows
    are history only.
    """

    __tablename__ = "dlq_replays"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    dlq_message_id: Mapped[str] = mapped_column(String(255), unique=True)
    dead_letter_queue: Mapped[str] = mapped_column(String(255))
    source_queue: Mapped[str] = mapped_column(String(255))
    # The id SQS gave the copy sent to the source queue.
    replayed_message_id: Mapped[str] = mapped_column(String(255))
    # processed_jobs / failed_jobs key of the job the message carries, when it carries one.
    job_key: Mapped[str | None] = mapped_column(String(255), index=True)
    replayed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

"""All models, imported here so Alembic sees the whole metadata."""

from app.models.assessment import Assessment, Attempt, AttemptAnswer, Question
from app.models.base import Base
from app.models.job import Job
from app.models.notification import Notification
from app.models.user import CandidateProfile, User
from app.models.worker import DailyReport, DlqReplay, EmailOutbox, FailedJob, ProcessedJob

__all__ = [
    "Assessment",
    "Attempt",
    "AttemptAnswer",
    "Base",
    "CandidateProfile",
    "DailyReport",
    "DlqReplay",
    "EmailOutbox",
    "FailedJob",
    "Job",
    "Notification",
    "ProcessedJob",
    "Question",
    "User",
]

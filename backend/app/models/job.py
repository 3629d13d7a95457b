"""Job postings."""

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow

JobType = Literal["Full Time", "Part Time", "Contract", "Internship", "Remote"]
JOB_TYPES: tuple[str, ...] = get_args(JobType)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The listing: newest active jobs first, optionally filtered by type.
        Index("ix_jobs_active_created", "active", "created_at", "id"),
        Index("ix_jobs_type_active_created", "job_type", "active", "created_at"),
        # Substring search on Postgres (ILIKE '%term%') uses trigram indexes.
        *(
            Index(
                f"ix_jobs_{column}_trgm",
                column,
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            ).ddl_if(dialect="postgresql")
            for column in ("title", "company", "description", "location")
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    company: Mapped[str] = mapped_column(String(200))
    location: Mapped[str] = mapped_column(String(200))
    job_type: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text)
    skills: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

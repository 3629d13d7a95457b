"""Job postings."""

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import BigIntId, Base, JSONType, UTCDateTime, utcnow

JOB_TYPES = ("Full Time", "Part Time", "Contract", "Internship", "Remote")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The listing: newest active jobs first, optionally filtered by type.
        Index("ix_jobs_active_created", "active", "created_at", "id"),
        Index("ix_jobs_type_active_created", "job_type", "active", "created_at"),
        Index("ix_jobs_location", "location"),
        # Substring search on Postgres (ILIKE '%term%') uses trigram indexes.
        Index(
            "ix_jobs_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_jobs_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
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

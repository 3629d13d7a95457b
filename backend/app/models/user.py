"""Users (candidates and admins) and candidate profiles."""

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('candidate', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # Stored lower-cased, so the unique constraint is case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default="candidate", index=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    # Bumped when the account changes in a way that must end its sessions (deactivation, role
    # change, password change): access tokens carry the version they were issued under.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    profile: Mapped["CandidateProfile | None"] = relationship(
        back_populates="user", lazy="raise", uselist=False
    )


class CandidateProfile(Base):
    __tablename__ = "candidate_profiles"
    __table_args__ = (
        CheckConstraint(
            "resume_status IN ('none', 'uploaded', 'queued', 'processing', 'parsed', 'failed')",
            name="resume_status",
        ),
        Index("ix_candidate_profiles_updated_at", "updated_at"),
        # Candidate search's ILIKE '%term%' on summaries (Postgres only).
        Index(
            "ix_candidate_profiles_summary_trgm",
            "summary",
            postgresql_using="gin",
            postgresql_ops={"summary": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    user_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    phone: Mapped[str | None] = mapped_column(String(40))
    location: Mapped[str | None] = mapped_column(String(200))
    summary: Mapped[str | None] = mapped_column(Text)
    skills: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    experience_years: Mapped[int | None] = mapped_column(Integer)
    resume_key: Mapped[str | None] = mapped_column(String(512))
    resume_filename: Mapped[str | None] = mapped_column(String(255))
    resume_status: Mapped[str] = mapped_column(String(20), default="none", index=True)
    resume_error: Mapped[str | None] = mapped_column(String(500))
    resume_uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resume_parsed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="profile", lazy="raise")

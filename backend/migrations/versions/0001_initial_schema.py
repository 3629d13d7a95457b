"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 20:51:48.355105
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    is_postgres = op.get_bind().dialect.name == "postgresql"
    if is_postgres:
        # Trigram indexes serve the ILIKE '%term%' searches on jobs and candidate summaries.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "tests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tests")),
    )
    op.create_index(op.f("ix_tests_active"), "tests", ["active"], unique=False)
    op.create_table(
        "users",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('candidate', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_index(op.f("ix_users_role"), "users", ["role"], unique=False)
    op.create_table(
        "candidate_profiles",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("location", sa.String(length=200), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column(
            "skills",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("experience_years", sa.Integer(), nullable=True),
        sa.Column("resume_key", sa.String(length=512), nullable=True),
        sa.Column("resume_filename", sa.String(length=255), nullable=True),
        sa.Column("resume_status", sa.String(length=20), nullable=False),
        sa.Column("resume_error", sa.String(length=500), nullable=True),
        sa.Column("resume_uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resume_parsed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "resume_status IN ('none', 'uploaded', 'queued', 'processing', 'parsed', 'failed')",
            name=op.f("ck_candidate_profiles_resume_status"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_candidate_profiles_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_candidate_profiles")),
    )
    op.create_index(
        op.f("ix_candidate_profiles_resume_status"),
        "candidate_profiles",
        ["resume_status"],
        unique=False,
    )
    if is_postgres:
        op.create_index(
            "ix_candidate_profiles_summary_trgm",
            "candidate_profiles",
            ["summary"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"summary": "gin_trgm_ops"},
        )
    op.create_index(
        "ix_candidate_profiles_updated_at", "candidate_profiles", ["updated_at"], unique=False
    )
    op.create_table(
        "jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=False),
        sa.Column("job_type", sa.String(length=40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "skills",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "created_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_jobs_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_active_created", "jobs", ["active", "created_at", "id"], unique=False)
    if is_postgres:
        op.create_index(
            "ix_jobs_company_trgm",
            "jobs",
            ["company"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"company": "gin_trgm_ops"},
        )
    if is_postgres:
        op.create_index(
            "ix_jobs_description_trgm",
            "jobs",
            ["description"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        )
    if is_postgres:
        op.create_index(
            "ix_jobs_location_trgm",
            "jobs",
            ["location"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"location": "gin_trgm_ops"},
        )
    if is_postgres:
        op.create_index(
            "ix_jobs_title_trgm",
            "jobs",
            ["title"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        )
    op.create_index(
        "ix_jobs_type_active_created", "jobs", ["job_type", "active", "created_at"], unique=False
    )
    op.create_table(
        "notifications",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_user_created", "notifications", ["user_id", "created_at"], unique=False
    )
    op.create_table(
        "questions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("test_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "options",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("correct_answer", sa.Text(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["test_id"], ["tests.id"], name=op.f("fk_questions_test_id_tests"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questions")),
    )
    op.create_index(
        "ix_questions_test_position", "questions", ["test_id", "position"], unique=False
    )
    op.create_table(
        "test_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("test_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("max_score", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "status IN ('in_progress', 'completed', 'abandoned')",
            name=op.f("ck_test_attempts_status"),
        ),
        sa.ForeignKeyConstraint(
            ["test_id"],
            ["tests.id"],
            name=op.f("fk_test_attempts_test_id_tests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_test_attempts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_attempts")),
    )
    op.create_index(
        "ix_test_attempts_status_completed",
        "test_attempts",
        ["status", "completed_at"],
        unique=False,
    )
    op.create_index(
        "ix_test_attempts_status_expires", "test_attempts", ["status", "expires_at"], unique=False
    )
    op.create_index("ix_test_attempts_test_id", "test_attempts", ["test_id"], unique=False)
    op.create_index(
        "ix_test_attempts_user_started", "test_attempts", ["user_id", "started_at"], unique=False
    )
    op.create_index(
        "uq_test_attempts_open",
        "test_attempts",
        ["user_id", "test_id"],
        unique=True,
        postgresql_where=sa.text("status = 'in_progress'"),
        sqlite_where=sa.text("status = 'in_progress'"),
    )
    op.create_table(
        "answers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "question_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("answer_text", sa.Text(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["test_attempts.id"],
            name=op.f("fk_answers_attempt_id_test_attempts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["question_id"],
            ["questions.id"],
            name=op.f("fk_answers_question_id_questions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answers")),
        sa.UniqueConstraint("attempt_id", "question_id", name=op.f("uq_answers_attempt_id")),
    )
    op.create_index(op.f("ix_answers_question_id"), "answers", ["question_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_answers_question_id"), table_name="answers")
    op.drop_table("answers")
    op.drop_index(
        "uq_test_attempts_open",
        table_name="test_attempts",
        postgresql_where=sa.text("status = 'in_progress'"),
        sqlite_where=sa.text("status = 'in_progress'"),
    )
    op.drop_index("ix_test_attempts_user_started", table_name="test_attempts")
    op.drop_index("ix_test_attempts_test_id", table_name="test_attempts")
    op.drop_index("ix_test_attempts_status_expires", table_name="test_attempts")
    op.drop_index("ix_test_attempts_status_completed", table_name="test_attempts")
    op.drop_table("test_attempts")
    op.drop_index("ix_questions_test_position", table_name="questions")
    op.drop_table("questions")
    op.drop_index("ix_notifications_user_created", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_jobs_type_active_created", table_name="jobs")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(
            "ix_jobs_title_trgm",
            table_name="jobs",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(
            "ix_jobs_location_trgm",
            table_name="jobs",
            postgresql_using="gin",
            postgresql_ops={"location": "gin_trgm_ops"},
        )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(
            "ix_jobs_description_trgm",
            table_name="jobs",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(
            "ix_jobs_company_trgm",
            table_name="jobs",
            postgresql_using="gin",
            postgresql_ops={"company": "gin_trgm_ops"},
        )
    op.drop_index("ix_jobs_active_created", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_candidate_profiles_updated_at", table_name="candidate_profiles")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(
            "ix_candidate_profiles_summary_trgm",
            table_name="candidate_profiles",
            postgresql_using="gin",
            postgresql_ops={"summary": "gin_trgm_ops"},
        )
    op.drop_index(op.f("ix_candidate_profiles_resume_status"), table_name="candidate_profiles")
    op.drop_table("candidate_profiles")
    op.drop_index(op.f("ix_users_role"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_tests_active"), table_name="tests")
    op.drop_table("tests")

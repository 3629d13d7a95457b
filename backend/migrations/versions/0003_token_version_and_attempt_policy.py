"""users.token_version (sessions end when an account changes); tests' attempt policy

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("token_version", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("tests", sa.Column("max_attempts", sa.Integer(), nullable=True))
    op.add_column("tests", sa.Column("retake_cooldown_minutes", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tests") as batch:
        batch.drop_column("retake_cooldown_minutes")
        batch.drop_column("max_attempts")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")

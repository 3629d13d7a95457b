"""dlq_replays: the ledger of dead-letter messages replayed by `python -m ops.dlq_replay`

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dlq_replays",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dlq_message_id", sa.String(length=255), nullable=False),
        sa.Column("dead_letter_queue", sa.String(length=255), nullable=False),
        sa.Column("source_queue", sa.String(length=255), nullable=False),
        sa.Column("replayed_message_id", sa.String(length=255), nullable=False),
        sa.Column("job_key", sa.String(length=255), nullable=True),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlq_replays")),
        sa.UniqueConstraint("dlq_message_id", name=op.f("uq_dlq_replays_dlq_message_id")),
    )
    op.create_index(op.f("ix_dlq_replays_job_key"), "dlq_replays", ["job_key"], unique=False)
    op.create_index(
        op.f("ix_dlq_replays_replayed_at"), "dlq_replays", ["replayed_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_dlq_replays_replayed_at"), table_name="dlq_replays")
    op.drop_index(op.f("ix_dlq_replays_job_key"), table_name="dlq_replays")
    op.drop_table("dlq_replays")

"""gemini hosts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:04:58.634736
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gemini_hosts",
        sa.Column("host", sa.String(length=300), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("offered_fingerprint", sa.String(length=100), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_gemini_hosts")),
    )


def downgrade() -> None:
    op.drop_table("gemini_hosts")

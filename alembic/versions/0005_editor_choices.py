"""the editor's desk: choices about the next edition, amended editions, hidden items

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "choices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("section", sa.String(length=300), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_in", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["entries.id"],
            name=op.f("fk_choices_entry_id_entries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["spent_in"],
            ["editions.id"],
            name=op.f("fk_choices_spent_in_editions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_choices")),
    )
    op.create_index("ix_choices_entry", "choices", ["entry_id"], unique=False)
    op.create_index("ix_choices_stream_spent", "choices", ["stream", "spent_in"], unique=False)
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("edition_items", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("hidden", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("edition_items", schema=None) as batch_op:
        batch_op.drop_column("hidden")
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
    op.drop_index("ix_choices_stream_spent", table_name="choices")
    op.drop_index("ix_choices_entry", table_name="choices")
    op.drop_table("choices")

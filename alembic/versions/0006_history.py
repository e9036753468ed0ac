"""years of history: what each published page was made of, kept pages; entries marked when
an edition takes them (retention), an index for the own feeds' newest entries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pages",
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("source", sa.String(length=80), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_pages")),
    )
    op.create_table(
        "kept_editions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=100), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kept_editions")),
        sa.UniqueConstraint("stream", "date", "number", name="uq_kept_editions_stream_date_number"),
    )
    # Not in batch mode: SQLite adds a column with a constant default and creates indexes in
    # place, where a batch copy would drop `entries`, which edition_items' foreign key refuses
    # once editions exist.
    op.add_column(
        "entries",
        sa.Column("in_edition", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index("ix_entries_feed_published", "entries", ["feed_id", "published_at"])
    op.create_index("ix_entries_unpublished", "entries", ["in_edition", "first_seen_at"])
    op.execute(
        "UPDATE entries SET in_edition = true WHERE id IN (SELECT entry_id FROM edition_items)"
    )


def downgrade() -> None:
    op.drop_index("ix_entries_unpublished", table_name="entries")
    op.drop_index("ix_entries_feed_published", table_name="entries")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_column("in_edition")
    op.drop_table("kept_editions")
    op.drop_table("pages")

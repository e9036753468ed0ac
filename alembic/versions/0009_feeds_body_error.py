"""feeds keep the validators of a body that did not parse, with its error and its judge

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# ALTER TABLE itself, not a batch: SQLite's batch copies `feeds`, and dropping the old table
# is refused while entries refer to it (DROP COLUMN needs SQLite 3.35, from 2021).
def upgrade() -> None:
    op.add_column("feeds", sa.Column("body_error", sa.Text(), nullable=True))
    op.add_column("feeds", sa.Column("body_error_by", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_column("feeds", "body_error_by")
    op.drop_column("feeds", "body_error")

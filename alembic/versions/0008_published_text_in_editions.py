"""published entries keep their text only in their edition's copy

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The edition's copy (edition_items) is what every page shows; the entry keeps its
    # identity. On SQLite, `digest db prune --vacuum` gives the space back.
    op.execute(
        "UPDATE entries SET title = '', summary = '', link = NULL, canonical_url = NULL,"
        " author = NULL"
        " WHERE id IN (SELECT entry_id FROM edition_items)"
    )


def downgrade() -> None:
    # The text as the edition took it; authors are not in the copy and stay empty.
    op.execute(
        "UPDATE entries SET"
        " title = (SELECT title FROM edition_items WHERE entry_id = entries.id),"
        " summary = (SELECT blurb FROM edition_items WHERE entry_id = entries.id),"
        " link = (SELECT link FROM edition_items WHERE entry_id = entries.id),"
        " canonical_url = (SELECT canonical_url FROM edition_items WHERE entry_id = entries.id)"
        " WHERE id IN (SELECT entry_id FROM edition_items)"
    )

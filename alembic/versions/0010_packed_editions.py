"""old editions packed into their row; published stories and retired entries by fingerprint

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 22:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fingerprint(text: str) -> int:
    # digest.store.packed.fingerprint as of this revision: a migration does not change with
    # the code that follows it.
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# ALTER TABLE itself, not a batch (see 0009): DROP COLUMN needs SQLite 3.35, from 2021.
def upgrade() -> None:
    op.add_column("editions", sa.Column("packed", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_editions_unpacked",
        "editions",
        ["closed_at"],
        sqlite_where=sa.text("packed IS NULL"),
        postgresql_where=sa.text("packed IS NULL"),
    )
    published = op.create_table(
        "published_urls",
        sa.Column("stream", sa.String(length=100), nullable=False),
        sa.Column("url_fingerprint", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "url_fingerprint", name="pk_published_urls"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "retired_entries",
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("key_fingerprint", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"],
            ["feeds.id"],
            name="fk_retired_entries_feed_id_feeds",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("feed_id", "key_fingerprint", name="pk_retired_entries"),
        sqlite_with_rowid=False,
    )
    stories = op.get_bind().execute(
        sa.text(
            "SELECT DISTINCT stream, canonical_url FROM edition_items"
            " WHERE canonical_url IS NOT NULL"
        )
    )
    while rows := stories.fetchmany(5000):
        op.bulk_insert(
            published,
            [{"stream": stream, "url_fingerprint": _fingerprint(url)} for stream, url in rows],
        )
    op.drop_index("ix_edition_items_stream_canonical", table_name="edition_items")
    op.drop_column("edition_items", "canonical_url")


def downgrade() -> None:
    packed = op.get_bind().scalar(sa.text("SELECT count(*) FROM editions WHERE packed IS NOT NULL"))
    if packed:
        raise RuntimeError(
            f"{packed} editions are packed and their entries retired: this schema cannot hold"
            " them; restore a backup taken before the upgrade instead"
        )
    from digest.parse.urls import canonical_url  # the links, as the code that runs this reads them

    op.add_column(
        "edition_items", sa.Column("canonical_url", sa.String(length=2048), nullable=True)
    )
    items = op.get_bind().execute(sa.text("SELECT id, link FROM edition_items")).fetchall()
    for item_id, link in items:
        op.get_bind().execute(
            sa.text("UPDATE edition_items SET canonical_url = :url WHERE id = :id"),
            {"url": canonical_url(link), "id": item_id},
        )
    op.create_index(
        "ix_edition_items_stream_canonical", "edition_items", ["stream", "canonical_url"]
    )
    op.drop_table("retired_entries")
    op.drop_table("published_urls")
    op.drop_index("ix_editions_unpacked", table_name="editions")
    op.drop_column("editions", "packed")

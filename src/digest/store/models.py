"""The schema: feeds, entries, editions and edition items.

alembic (alembic/ at the top of the repository) owns how it is created and changed;
`alembic check` keeps these models and the migrations in step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every engine (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """Convert each distinct datetime once, however many rows bind it.

        A poll binds the same `now` as first seen and updated time of every entry it stores:
        converting it afresh each time was a fifth of storing a feed on SQLite. The last
        value is remembered by identity, in one tuple so that threads sharing this processor
        never see one value paired with another's result.
        """
        process = super().bind_processor(dialect)
        if process is None:
            return None
        convert = process
        if dialect.name == "sqlite":
            # SQLAlchemy's SQLite text format ("%Y-%m-%d %H:%M:%S.%f"), written by isoformat
            # at a third of the cost: every new entry binds its own published time.
            def convert(value: datetime | None) -> Any:
                naive = self.process_bind_param(value, dialect)
                return None if naive is None else naive.isoformat(" ", "microseconds")

        last: tuple[datetime | None, Any] = (None, None)

        def remembering(value: datetime | None) -> Any:
            nonlocal last
            seen, result = last
            if value is not seen:
                result = convert(value)
                last = (value, result)
            return result

        return remembering

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class FeedRow(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    config_url: Mapped[str] = mapped_column(
        String(2048), unique=True
    )  # identity: the URL in feeds.yaml
    url: Mapped[str] = mapped_column(String(2048))  # where it is fetched now (301/308 change it)
    name: Mapped[str] = mapped_column(String(300))
    stream: Mapped[str | None] = mapped_column(String(100))
    section: Mapped[str | None] = mapped_column(String(300))
    own: Mapped[bool] = mapped_column(Boolean, default=False)
    weight: Mapped[int] = mapped_column(Integer, default=0)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # still listed in feeds.yaml
    title: Mapped[str | None] = mapped_column(Text)  # as the feed calls itself

    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    body_hash: Mapped[str | None] = mapped_column(String(80))
    # Why the body those validators (or that hash) stand for did not parse; NULL when it did.
    # The same body again (a 304, the same bytes) is then that error again, without a parse.
    body_error: Mapped[str | None] = mapped_column(Text)
    body_error_by: Mapped[str | None] = mapped_column(String(40))  # parse.PARSER_REVISION

    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(40))
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    disabled_reason: Mapped[str | None] = mapped_column(Text)

    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_feeds_due", "active", "next_poll_at"),)


class EntryRow(Base):
    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(600))  # identity within the feed
    title: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    canonical_url: Mapped[str | None] = mapped_column(String(2048), index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String(80))
    # Set when an edition takes it, never cleared: retention keeps it as long as the edition,
    # and finds the others to prune through ix_entries_unpublished without walking history.
    in_edition: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (
        UniqueConstraint("feed_id", "key", name="uq_entries_feed_key"),
        Index("ix_entries_unpublished", "in_edition", "first_seen_at"),
        # The own feeds' newest entries (recent posts, every render) and `digest entries
        # --feed`, without a walk through every feed's history.
        Index("ix_entries_feed_published", "feed_id", "published_at"),
    )


class EditionRow(Base):
    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(String(100))
    date: Mapped[date] = mapped_column(Date)  # local date of closed_at
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When `digest amend` last corrected it (its feed entries' `updated`); None: never.
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Its shown items, compressed (digest.store.packed), once retention packed it: then it
    # has no edition_items rows. None: its items are rows. Deferred: indexes and archives
    # load every edition bare, and need none of it.
    packed: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

    __table_args__ = (
        # The exactly-once key: a second runner closing the same edition fails here.
        UniqueConstraint("stream", "date", "number", name="uq_editions_stream_date_number"),
        Index("ix_editions_stream_closed", "stream", "closed_at"),
        # The few editions still to pack (retention), without reading the packed ones.
        Index(
            "ix_editions_unpacked",
            "closed_at",
            sqlite_where=text("packed IS NULL"),
            postgresql_where=text("packed IS NULL"),
        ),
    )


class EditionItemRow(Base):
    """A copy of an entry as it was when its edition closed: editions never change (one older
    than `retention.published` keeps its items packed instead: EditionRow.packed)."""

    __tablename__ = "edition_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id"), unique=True)
    stream: Mapped[str] = mapped_column(String(100))
    section: Mapped[str] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    blurb: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Taken out by `digest amend --hide`: kept, so the entry never enters another edition.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_edition_items_edition", "edition_id", "position"),)


class PublishedUrlRow(Base):
    """A story a stream has published, by its canonical URL's fingerprint: a later copy of it
    (another feed's, a repost) is found already published however old its edition, packed or
    not, in a few bytes a story (digest.store.packed.fingerprint)."""

    __tablename__ = "published_urls"

    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    url_fingerprint: Mapped[int] = mapped_column(BigInteger, primary_key=True)

    __table_args__ = ({"sqlite_with_rowid": False},)


class RetiredEntryRow(Base):
    """An entry whose edition was packed, by its key's fingerprint: its row is gone, and a
    feed that still lists it does not bring it back as new (digest.store.packed)."""

    __tablename__ = "retired_entries"

    feed_id: Mapped[int] = mapped_column(
        ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True
    )
    key_fingerprint: Mapped[int] = mapped_column(BigInteger, primary_key=True)

    __table_args__ = ({"sqlite_with_rowid": False},)


class ChoiceRow(Base):
    """An editor's choice about a stream's next edition (digest.store.choices).

    kind: `hide` (entry_id; lasts until unhidden), `pin` (entry_id, and a section to move it
    to or None), `headline` (entry_id, position) or `title` (text). Pins, headlines and titles
    are spent by the edition that used them (`spent_in`); hides keep their entry out of every
    later edition too.
    """

    __tablename__ = "choices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    section: Mapped[str | None] = mapped_column(String(300))
    position: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)
    spent_in: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))

    __table_args__ = (
        Index("ix_choices_stream_spent", "stream", "spent_in"),
        Index("ix_choices_entry", "entry_id"),
    )


class GeminiHostRow(Base):
    """A Gemini host's pinned certificate key (trust on first use), and a changed key seen
    since, which only the operator can accept (`digest trust HOST`)."""

    __tablename__ = "gemini_hosts"

    host: Mapped[str] = mapped_column(String(300), primary_key=True)  # "host:port"
    fingerprint: Mapped[str] = mapped_column(String(100))  # "SHA256:<hex>" of the public key
    offered_fingerprint: Mapped[str | None] = mapped_column(String(100))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerRow(Base):
    """A poller or publisher that is (or was) running: `digest status` lists the live ones."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:random
    role: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PageRow(Base):
    """A file digest published in the output folder: what it was made of and its bytes' hash,
    so that a render with nothing new knows without reading the file (digest.publish)."""

    __tablename__ = "pages"

    path: Mapped[str] = mapped_column(String(500), primary_key=True)  # under the output folder
    source: Mapped[str] = mapped_column(String(80))  # fingerprint of what it was made of
    digest: Mapped[str] = mapped_column(String(80))  # SHA-256 of its bytes


class KeptEditionRow(Base):
    """A published edition page the database had no record of (it was lost or replaced), as
    the page shows it: listed in the indexes, never written (digest.publish)."""

    __tablename__ = "kept_editions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(String(100))
    date: Mapped[date] = mapped_column(Date)
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("stream", "date", "number", name="uq_kept_editions_stream_date_number"),
    )


class MailDeliveryRow(Base):
    """One edition for one recipient (digest.mail): queued when the edition closes, claimed
    while it is sent, so that a crash or a down mail server neither sends it twice nor
    loses it."""

    __tablename__ = "mail_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(String(400))
    state: Mapped[str] = mapped_column(String(10))  # pending, sending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When it may be tried (pending), or when a send in flight is taken for dead (sending).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("edition_id", "recipient", name="uq_mail_deliveries_edition_recipient"),
        Index("ix_mail_deliveries_due", "state", "next_attempt_at"),
    )


class HubPingRow(Base):
    """A WebSub hub not yet told that a feed changed (digest.websub): written before the
    ping, removed once the hub took it, so a failed or interrupted ping is sent next run."""

    __tablename__ = "hub_pings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(1000))
    topic: Mapped[str] = mapped_column(String(1000))  # the feed's URL
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the feed last changed
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("hub", "topic", name="uq_hub_pings_hub_topic"),)

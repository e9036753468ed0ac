"""Store stage: the database behind every other stage.

Its face, one module per entity behind it: feeds (sync, claims, poll results, health),
entries (stored once per feed, listed back), workers (heartbeats), Gemini hosts (`hosts`),
the models and migrations (`models`, `db`).
"""

from __future__ import annotations

from digest.store.db import Store
from digest.store.entries import (
    EntryChanges,
    StoredEntry,
    UnknownFeed,
    mark_published,
    plan_entry_changes,
    recent_entries,
    store_entries,
)
from digest.store.feeds import (
    ClaimedFeed,
    FeedHealth,
    FeedUpdate,
    ScheduledFeed,
    apply_feed_updates,
    claim_feeds,
    disabled_feeds,
    feed_health,
    feeds_scheduled_after,
    release_claims,
    renew_leases,
    reschedule,
    sync_feeds,
)
from digest.store.models import Base, EditionItemRow, EditionRow, EntryRow, FeedRow, WorkerRow
from digest.store.workers import WorkerStatus, heartbeat, live_workers

__all__ = [
    "Base",
    "ClaimedFeed",
    "EditionItemRow",
    "EditionRow",
    "EntryChanges",
    "EntryRow",
    "FeedHealth",
    "FeedRow",
    "FeedUpdate",
    "ScheduledFeed",
    "Store",
    "StoredEntry",
    "UnknownFeed",
    "WorkerRow",
    "WorkerStatus",
    "apply_feed_updates",
    "claim_feeds",
    "disabled_feeds",
    "feed_health",
    "feeds_scheduled_after",
    "heartbeat",
    "live_workers",
    "mark_published",
    "plan_entry_changes",
    "recent_entries",
    "release_claims",
    "renew_leases",
    "reschedule",
    "store_entries",
    "sync_feeds",
]

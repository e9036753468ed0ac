"""INSERT … ON CONFLICT in the database's own dialect.

Each dialect is imported when a statement is made, by which time the engine has loaded it:
a SQLite site's commands do not import PostgreSQL's dialect (80 ms of CPU at each start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Dialect

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite


def insert(dialect: Dialect, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` (a table or a mapped class) that can say ON CONFLICT."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)

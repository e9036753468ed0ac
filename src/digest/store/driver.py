"""Statements compiled once and run through the database driver's own executemany.

Polls write many rows per transaction (fifty entries per new feed, a row per polled feed);
SQLAlchemy's per-row parameter handling in an executemany cost more than the database's work
on them. Used by the feed and entry writers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class DriverStatement:
    """A statement compiled once per dialect, run with the driver's own executemany.

    The columns' own bind processors still convert each value, so what is stored is what the
    ORM would store.
    """

    sql: str
    positions: tuple[str, ...] | None  # parameter order for positional styles (qmark, format)
    processors: Mapping[str, Callable[[Any], Any]]

    @classmethod
    def compile(
        cls, statement: ClauseElement, dialect: Dialect, binds: Mapping[str, Column[Any]]
    ) -> DriverStatement:
        """`binds` names each parameter and the column whose type converts its values."""
        compiled = statement.compile(dialect=dialect, column_keys=list(binds), for_executemany=True)
        assert isinstance(compiled, SQLCompiler)
        processors = {
            name: process
            for name, column in binds.items()
            if (process := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        positions = tuple(compiled.positiontup) if compiled.positiontup else None
        return cls(compiled.string, positions, processors)

    def execute(self, connection: Connection, row: dict[str, Any]) -> list[Any]:
        """Run once and return every row; the row dict is converted in place."""
        return list(connection.exec_driver_sql(self.sql, self._parameters(row)))

    def execute_many(self, connection: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Run once per row; each row dict is converted in place."""
        parameters = [self._parameters(row) for row in rows]
        if parameters:
            connection.exec_driver_sql(self.sql, parameters)

    def _parameters(self, row: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        for name, process in self.processors.items():
            row[name] = process(row[name])
        return row if self.positions is None else tuple(map(row.__getitem__, self.positions))

"""Archives: a stream's editions by month and by year, so that no page lists them all.

Pure decisions over editions already loaded (bare ones will do): which months and years have
editions, and which month or year comes before and after another. The render stage turns
them into `<stream>/YYYY/MM/index.*` and `<stream>/YYYY/index.*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TypeVar

from digest.editions import Edition

_T = TypeVar("_T")


@dataclass(frozen=True)
class Month:
    year: int
    month: int
    editions: tuple[Edition, ...]  # newest first

    def path(self, stream: str) -> str:
        """Its page under the output folder, without extension: links/2025/03/index."""
        return f"{stream}/{self.year:04d}/{self.month:02d}/index"


@dataclass(frozen=True)
class Year:
    year: int
    months: tuple[Month, ...]  # newest first, only those with editions

    def path(self, stream: str) -> str:
        return f"{stream}/{self.year:04d}/index"

    @property
    def count(self) -> int:
        return sum(len(month.editions) for month in self.months)


def months(editions: Sequence[Edition]) -> list[Month]:
    """The months that have editions, newest first; `editions` come newest first (an
    edition's month is that of its date, the site's local date, as in its path)."""
    ordered = sorted(editions, key=lambda e: (e.date, e.closed_at, e.number), reverse=True)
    return [
        Month(year, month, tuple(group))
        for (year, month), group in groupby(ordered, key=lambda e: (e.date.year, e.date.month))
    ]


def years(all_months: Sequence[Month]) -> list[Year]:
    """The years that have editions, newest first, from `months` (newest first)."""
    return [Year(year, tuple(group)) for year, group in groupby(all_months, key=lambda m: m.year)]


def neighbours(items: Sequence[_T], index: int) -> tuple[_T | None, _T | None]:
    """(older, newer) of items[index] in a newest-first sequence."""
    older = items[index + 1] if index + 1 < len(items) else None
    newer = items[index - 1] if index > 0 else None
    return older, newer

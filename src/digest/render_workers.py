"""A rebuild on every core: many edition pages to make are made by worker processes.

digest.render decides what to make and writes it; this module only hands the edition pages
out and brings them back in order. Each worker loads its editions itself (`worker_load`: its
own connection to the database) and fills the templates, which is most of a rebuild's work.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from jinja2 import Environment

    from digest.editions import Edition

log = logging.getLogger("digest.render")


class EditionMaker(Protocol):
    """What makes an edition's pages once it is loaded (digest.render.EditionPages)."""

    def make(self, env: Environment, edition: Edition) -> tuple[bytes, ...]: ...


class Group(Protocol):
    """Files made together (digest.render's groups of pages)."""

    @property
    def edition(self) -> tuple[Edition, EditionMaker] | None: ...

    def make(self) -> tuple[bytes, ...]: ...


G = TypeVar("G", bound=Group)


class PageMakers(Generic[G]):
    """Makes the pages of `todo`, in order. Many edition pages to make (a rebuild, a changed
    template) are made by worker processes, one per core (up to MAX_WORKERS), each loading
    its editions (`worker_load`: its own connection to the database) and filling their
    templates, while this process makes the other pages and writes every file. A few
    editions are made here, as starting workers costs more than they do. Workers are handed
    IN_FLIGHT editions each ahead, so memory stays bounded whatever the history."""

    PARALLEL_FROM = 48  # edition groups to make before workers are started
    MAX_WORKERS = 4
    IN_FLIGHT = 4

    def __init__(
        self,
        todo: Sequence[G],
        templates_override: Path | None,
        worker_load: Callable[[Edition], Edition] | None,
    ) -> None:
        self._todo = todo
        self._pool: ProcessPoolExecutor | None = None
        self._workers = min(os.cpu_count() or 1, self.MAX_WORKERS)
        self.started = 0
        editions = sum(1 for pages in todo if pages.edition is not None)
        if worker_load is not None and self._workers > 1 and editions >= self.PARALLEL_FROM:
            self.started = self._workers
            # forkserver, not fork: the daemon renders while other threads run.
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_start_worker,
                initargs=(templates_override, worker_load),
            )

    def __enter__(self) -> PageMakers[G]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def made(self) -> Iterator[tuple[G, tuple[bytes, ...]]]:
        ahead: deque[tuple[G, Future[tuple[bytes, ...]] | None]] = deque()
        for pages in self._todo:
            ahead.append((pages, self._submit(pages)))
            while len(ahead) > self._workers * self.IN_FLIGHT:
                yield self._result(*ahead.popleft())
        while ahead:
            yield self._result(*ahead.popleft())

    def _submit(self, pages: G) -> Future[tuple[bytes, ...]] | None:
        """An edition's pages handed to a worker; None: made here when their turn comes."""
        if self._pool is None or pages.edition is None:
            return None
        edition, maker = pages.edition
        try:
            return self._pool.submit(_make_in_worker, maker, edition)
        except BrokenProcessPool:
            self._broken()
            return None

    def _result(
        self, pages: G, future: Future[tuple[bytes, ...]] | None
    ) -> tuple[G, tuple[bytes, ...]]:
        if future is not None:
            try:
                return pages, future.result()
            except BrokenProcessPool:
                self._broken()
        return pages, pages.make()

    def _broken(self) -> None:
        """A worker died (the OOM killer, a signal): the rest is made in this process, so
        the render still completes, only slower."""
        if self._pool is not None:
            log.warning("a render worker died; making the remaining pages in this process")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_worker: tuple[Environment, Callable[[Edition], Edition]] | None = None  # in a render worker


def _start_worker(templates_override: Path | None, load: Callable[[Edition], Edition]) -> None:
    from digest.render import make_environment

    global _worker
    _worker = (make_environment(templates_override), load)


def _make_in_worker(maker: EditionMaker, edition: Edition) -> tuple[bytes, ...]:
    assert _worker is not None
    env, load = _worker
    return maker.make(env, load(edition))

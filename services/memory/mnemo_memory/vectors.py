"""In-memory vector indexes: one float32 matrix per (organization, scope, embedding model).

An index is loaded from the database on its first search and then kept in sync by the writes of
this process (ADR 0004: one process owns the database file), so a search never reads vectors
through SQL. Small indexes are searched exactly; large ones first by Hamming distance between
binary codes of the centred vectors (48 bytes per 384-d vector, column-major so each word is one
contiguous pass), then the best few thousand candidates are re-ranked by exact cosine similarity.
All index work runs on one thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

# Candidates re-ranked exactly after the binary pass; below twice this, search is exact.
MIN_CANDIDATES = 2048
CANDIDATES_PER_RESULT = 40
_FAR = np.iinfo(np.uint16).max


@dataclass(frozen=True, slots=True)
class VectorKey:
    """Which vectors an index holds: a scope ("agent", "source" or "messages" + id) and a model."""

    org_id: str
    scope: str
    scope_id: str
    model: str


@dataclass(frozen=True, slots=True)
class VectorRows:
    """Rows to put in an index: keys, unit vectors, creation times (epoch s) and kinds."""

    pks: Ints
    vectors: Floats
    epochs: npt.NDArray[np.float64]
    kinds: npt.NDArray[np.int8]

    @staticmethod
    def empty(dim: int) -> VectorRows:
        return VectorRows(
            np.empty(0, np.int64),
            np.empty((0, dim), np.float32),
            np.empty(0, np.float64),
            np.empty(0, np.int8),
        )


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """Restrictions of a vector search; None means no restriction."""

    start_epoch: float | None = None
    end_epoch: float | None = None
    kinds: frozenset[int] | None = None
    allowed_pks: Ints | None = None
    # Months of the year (1-12, UTC) of the row's time; empty: any.
    months: frozenset[int] = frozenset()


@dataclass
class VectorIndex:
    """The vectors of one key, with room to grow; not thread-safe (the cache runs it on one thread)."""

    dim: int
    # Rows with a key at or below this were in the database snapshot the index was loaded from.
    loaded_up_to: int = 0
    size: int = 0
    pks: Ints = field(default_factory=lambda: np.empty(0, np.int64))
    vectors: Floats = field(default_factory=lambda: np.empty((0, 0), np.float32))
    epochs: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    kinds: npt.NDArray[np.int8] = field(default_factory=lambda: np.empty(0, np.int8))
    # The UTC month (1-12) of each row's time, for filters by month of the year.
    months: npt.NDArray[np.int8] = field(default_factory=lambda: np.empty(0, np.int8))
    center: Floats | None = None
    codes: npt.NDArray[np.uint64] | None = None  # (words, capacity), column-major

    @property
    def nbytes(self) -> int:
        total = (
            self.pks.nbytes
            + self.vectors.nbytes
            + self.epochs.nbytes
            + self.kinds.nbytes
            + self.months.nbytes
        )
        return total + (0 if self.codes is None else self.codes.nbytes)

    def _grow(self, needed: int) -> None:
        capacity = len(self.pks)
        if needed <= capacity:
            return
        capacity = max(needed, capacity * 2, 64)
        self.pks = _resized(self.pks, capacity)
        vectors = np.empty((capacity, self.dim), np.float32)
        if self.size:
            vectors[: self.size] = self.vectors[: self.size]
        self.vectors = vectors
        self.epochs = _resized(self.epochs, capacity)
        self.kinds = _resized(self.kinds, capacity)
        self.months = _resized(self.months, capacity)
        if self.codes is not None:
            codes = np.empty((self.codes.shape[0], capacity), np.uint64)
            codes[:, : self.size] = self.codes[:, : self.size]
            self.codes = codes

    def _encode(self, vectors: Floats) -> npt.NDArray[np.uint64]:
        assert self.center is not None
        bits = np.packbits(vectors > self.center, axis=1)
        pad = (-bits.shape[1]) % 8
        if pad:
            bits = np.pad(bits, ((0, 0), (0, pad)))
        return np.ascontiguousarray(bits.view(np.uint64).T)

    def add(self, rows: VectorRows) -> None:
        """Appends rows (keys must be new)."""
        count = len(rows.pks)
        if count == 0:
            return
        self._grow(self.size + count)
        end = self.size + count
        self.pks[self.size : end] = rows.pks
        self.vectors[self.size : end] = rows.vectors
        self.epochs[self.size : end] = rows.epochs
        self.kinds[self.size : end] = rows.kinds
        self.months[self.size : end] = month_of_year(rows.epochs)
        if self.codes is not None:
            self.codes[:, self.size : end] = self._encode(rows.vectors)
        self.size = end
        if self.codes is None and self.size > 2 * MIN_CANDIDATES:
            self._build_codes()

    def _build_codes(self) -> None:
        live = self.vectors[: self.size]
        self.center = live.mean(axis=0).astype(np.float32)
        encoded = self._encode(live)
        self.codes = np.empty((encoded.shape[0], len(self.pks)), np.uint64)
        self.codes[:, : self.size] = encoded

    def remove(self, pks: Ints) -> int:
        """Drops the rows with these keys; returns how many were there."""
        if self.size == 0 or len(pks) == 0:
            return 0
        gone = np.isin(self.pks[: self.size], pks)
        removed = int(gone.sum())
        if removed == 0:
            return 0
        keep = np.flatnonzero(~gone)
        kept = len(keep)
        self.pks[:kept] = self.pks[keep]
        self.vectors[:kept] = self.vectors[keep]
        self.epochs[:kept] = self.epochs[keep]
        self.kinds[:kept] = self.kinds[keep]
        self.months[:kept] = self.months[keep]
        if self.codes is not None:
            self.codes[:, :kept] = self.codes[:, keep]
        self.size = kept
        return removed

    def _mask(self, where: VectorFilter) -> npt.NDArray[np.bool_] | None:
        n = self.size
        mask: npt.NDArray[np.bool_] | None = None

        def both(extra: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
            return extra if mask is None else mask & extra

        if where.start_epoch is not None:
            mask = both(self.epochs[:n] >= where.start_epoch)
        if where.end_epoch is not None:
            mask = both(self.epochs[:n] < where.end_epoch)
        if where.kinds is not None:
            mask = both(np.isin(self.kinds[:n], np.fromiter(where.kinds, np.int8)))
        if where.allowed_pks is not None:
            mask = both(np.isin(self.pks[:n], where.allowed_pks))
        if where.months:
            mask = both(np.isin(self.months[:n], np.fromiter(where.months, np.int8)))
        return mask

    def search(self, query: Floats, k: int, where: VectorFilter) -> list[tuple[int, float]]:
        """The k rows most similar to `query` that pass the filter: (key, cosine similarity), best first."""
        n = self.size
        if n == 0 or k <= 0:
            return []
        mask = self._mask(where)
        wanted = max(MIN_CANDIDATES, CANDIDATES_PER_RESULT * k)
        passing = None if mask is None else np.flatnonzero(mask)
        if self.codes is None or n <= 2 * wanted or (passing is not None and len(passing) <= wanted):
            # Exact: a small index, or a filter that leaves few rows (cheaper than the binary pass).
            rows = np.arange(n) if passing is None else passing
        else:
            rows = self._candidates(query, wanted, mask)
        if len(rows) == 0:
            return []
        sims = self.vectors[rows] @ query
        top = min(k, len(rows))
        best = np.argpartition(-sims, top - 1)[:top] if top < len(rows) else np.arange(len(rows))
        best = best[np.argsort(-sims[best], kind="stable")]
        return [(int(self.pks[rows[i]]), float(sims[i])) for i in best]

    def _candidates(self, query: Floats, wanted: int, mask: npt.NDArray[np.bool_] | None) -> Ints:
        assert self.codes is not None
        n = self.size
        code = self._encode(query[None, :])[:, 0]
        scratch = np.empty(n, np.uint64)
        distance = np.zeros(n, np.uint16)
        for word in range(self.codes.shape[0]):
            np.bitwise_xor(self.codes[word, :n], code[word], out=scratch)
            distance += np.bitwise_count(scratch).astype(np.uint16)
        if mask is not None:
            distance[~mask] = _FAR
        counts = np.cumsum(np.bincount(distance, minlength=int(_FAR) + 1)[:-1])
        threshold = int(np.searchsorted(counts, wanted))
        if threshold >= int(_FAR):
            return np.flatnonzero(distance < _FAR)  # fewer rows pass the filter than are wanted
        # Every row closer than the threshold, then ties at it up to `wanted` (ties can be thousands).
        closer = np.flatnonzero(distance < threshold)
        ties = np.flatnonzero(distance == threshold)[: max(0, wanted - len(closer))]
        return np.concatenate([closer, ties])


def month_of_year(epochs: npt.NDArray[np.float64]) -> Ints:
    """The UTC month (1-12) of each time in epoch seconds."""
    months = epochs.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return months % 12 + 1


ArrayT = TypeVar("ArrayT", bound=np.generic)


def _resized(array: npt.NDArray[ArrayT], capacity: int) -> npt.NDArray[ArrayT]:
    grown: npt.NDArray[ArrayT] = np.empty(capacity, array.dtype)
    grown[: len(array)] = array
    return grown


Loader = Callable[[], Awaitable[tuple[VectorRows, int]]]


class VectorCache:
    """Loaded indexes, least recently used first out when over the memory budget."""

    def __init__(self, budget_bytes: int) -> None:
        # Process-wide: one BLAS thread. A search's matrix-vector products (a few thousand rows) gain nothing
        # from a second one, whose busy-waiting cost ~25-30 ms of CPU per search above ~3,000 rows
        # (bench/recall.py) and takes a core from the rest of the mesh (as in the llm-gateway, ADR 0005).
        threadpool_limits(limits=1, user_api="blas")
        self._budget = budget_bytes
        self._indexes: OrderedDict[VectorKey, VectorIndex] = OrderedDict()
        self._locks: dict[VectorKey, asyncio.Lock] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-vectors")

    async def _run(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _lock(self, key: VectorKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _index(self, key: VectorKey, dim: int, load: Loader) -> VectorIndex:
        index = self._indexes.get(key)
        if index is not None:
            self._indexes.move_to_end(key)
            return index
        async with self._lock(key):
            index = self._indexes.get(key)
            if index is not None:
                return index
            rows, loaded_up_to = await load()
            index = VectorIndex(dim=dim, loaded_up_to=loaded_up_to)
            await self._run(index.add, rows)
            self._indexes[key] = index
            self._evict()
            return index

    def _evict(self) -> None:
        total = sum(index.nbytes for index in self._indexes.values())
        while total > self._budget and len(self._indexes) > 1:
            key, index = self._indexes.popitem(last=False)
            total -= index.nbytes
            log.info("vector index of %s/%s (%s) evicted from memory", key.scope, key.scope_id, key.model)

    async def search(
        self, key: VectorKey, query: Floats, k: int, where: VectorFilter, load: Loader
    ) -> list[tuple[int, float]]:
        """Searches the key's index, loading it first if needed."""
        index = await self._index(key, len(query), load)
        result = await self._run(index.search, query, k, where)
        return result  # type: ignore[return-value]

    async def add(self, key: VectorKey, rows: VectorRows) -> None:
        """Adds rows just committed to the database, if the key's index is in memory."""
        async with self._lock(key):
            index = self._indexes.get(key)
            if index is None:
                return  # loaded later from the database, which has them
            fresh = rows.pks > index.loaded_up_to
            if not fresh.all():
                rows = VectorRows(rows.pks[fresh], rows.vectors[fresh], rows.epochs[fresh], rows.kinds[fresh])
            await self._run(index.add, rows)
            self._evict()

    async def remove(self, key: VectorKey, pks: Ints) -> None:
        """Drops rows just deleted from the database, if the key's index is in memory."""
        async with self._lock(key):
            index = self._indexes.get(key)
            if index is not None:
                await self._run(index.remove, pks)

    async def forget(self, predicate: Callable[[VectorKey], bool]) -> None:
        """Drops whole indexes (a purged agent, a deleted source)."""
        for key in [key for key in self._indexes if predicate(key)]:
            async with self._lock(key):
                self._indexes.pop(key, None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

"""The in-memory dataset every stage reads: items with titles, and train/valid/test rows.

A row is one sample (user, history of item ids oldest first, target item). Item ids are
1-based; id 0 is padding. Histories are stored left-padded with 0 in a dense
``[rows, max_history]`` int64 array, so the most recent item is always the last column,
which is what sequential CF models want and what makes batching free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from tca4rec.data.title_items import SameTitleItems
from tca4rec.errors import ConfigError, DatasetError
from tca4rec.validate import check_seed

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Split:
    """The rows of one split. All arrays have the same first dimension R."""

    name: str
    users: np.ndarray  # int64 [R]
    histories: np.ndarray  # int64 [R, H], left-padded with 0, oldest first
    targets: np.ndarray  # int64 [R]
    timestamps: np.ndarray  # int64 [R]
    index: np.ndarray | None = None  # int64 [R]: row numbers in the whole split (None: 0..R-1)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def history_lengths(self) -> np.ndarray:
        return (self.histories > 0).sum(axis=1)

    def history(self, row: int) -> list[int]:
        """Item ids of row ``row``'s history, oldest first, padding removed."""
        h = self.histories[row]
        return [int(i) for i in h[h > 0]]

    @property
    def row_ids(self) -> np.ndarray:
        """Row numbers in the whole split: what predictions files record, and what pairs rows across runs."""
        return np.arange(len(self), dtype=np.int64) if self.index is None else self.index

    def head(self, n: int | None) -> "Split":
        """The first ``n`` rows (all when ``n`` is None): the ``--limit`` of every command."""
        if n is None or n >= len(self):
            return self
        return self._take(np.arange(n))

    def sample(self, n: int | None, seed: int, exclude: tuple[tuple[int, int], ...] = ()) -> "Split":
        """``n`` rows drawn without replacement by ``seed``, kept in split order (all when ``n`` is None).

        The first rows of a time-ordered split are the earliest users' last interactions; a seeded
        sample represents the whole split, and the same seed gives the same rows on any machine.
        ``exclude``: ``(n, seed)`` pairs of earlier samples whose rows are left out, so that a
        replication is scored on rows no earlier study has seen.
        """
        pool = np.arange(len(self))
        if exclude:
            taken = np.concatenate([_draw(len(self), n_e, seed_e) for n_e, seed_e in exclude])
            pool = np.setdiff1d(pool, taken)
            if n is not None and n > len(pool):
                raise ConfigError(f"{n} rows requested, but only {len(pool)} rows of '{self.name}' are left "
                                 f"after excluding the samples {list(exclude)}")
        if n is None or n >= len(pool):
            return self if len(pool) == len(self) else self._take(pool)
        return self._take(pool[_draw(len(pool), n, seed)])

    def select(self, n: int | None, sample_seed: int | None = None,
               exclude: tuple[tuple[int, int], ...] = ()) -> "Split":
        """``head(n)``, or ``sample(n, sample_seed, exclude)`` when a seed is given."""
        if exclude and sample_seed is None:
            raise ConfigError("excluding earlier samples needs a sample seed")
        for seed in (() if sample_seed is None else (sample_seed,)) + tuple(seed for _, seed in exclude):
            check_seed(seed, "--sample-seed")
        return self.head(n) if sample_seed is None else self.sample(n, sample_seed, exclude)

    def rows_between(self, start: int, stop: int) -> "Split":
        """Rows ``start .. stop - 1``, keeping their row ids (a block of a long evaluation)."""
        return self._take(np.arange(start, min(stop, len(self))))

    def _take(self, rows: np.ndarray) -> "Split":
        return Split(self.name, self.users[rows], self.histories[rows], self.targets[rows], self.timestamps[rows],
                     self.row_ids[rows])


def item_counts(histories: np.ndarray, targets: np.ndarray, num_items: int) -> np.ndarray:
    """How often each item id 0..num_items occurs in rows' histories and targets (float64, id 0 = 0)."""
    items = np.concatenate([histories.reshape(-1), targets.reshape(-1)])
    counts = np.bincount(items, minlength=num_items + 1)[: num_items + 1].astype(np.float64)
    counts[0] = 0.0
    return counts


def _draw(size: int, n: int | None, seed: int) -> np.ndarray:
    """Positions of a seeded sample of ``n`` of ``size`` rows, sorted (all when ``n`` is None or >= size)."""
    if n is None or n >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, size=n, replace=False))


@dataclass
class RecDataset:
    """Items (ids 1..num_items) and the rows of each split.

    ``titles[i]`` / ``brands[i]`` describe item i; index 0 is the padding item ("").
    ``title_group[i]`` is the smallest item id with exactly the same title as item i, so that
    "a hit is the target or an item with the identical title" is ``title_group[a] ==
    title_group[b]``.
    """

    name: str
    titles: list[str]
    brands: list[str]
    splits: dict[str, Split]
    num_users: int
    root: Path | None = None
    raw_ids: list[str] | None = None  # source ids (ASINs) by item id, index 0 = ""; kept on save
    title_group: np.ndarray = field(init=False)  # int64 [num_items + 1]

    def __post_init__(self) -> None:
        first: dict[str, int] = {}
        group = np.zeros(len(self.titles), dtype=np.int64)
        for i in range(1, len(self.titles)):
            group[i] = first.setdefault(self.titles[i], i)
        self.title_group = group

    @property
    def num_items(self) -> int:
        return len(self.titles) - 1

    @cached_property
    def same_title_items(self) -> SameTitleItems:
        """The items of every shared title: which item a generated title names (``title_items.py``)."""
        return SameTitleItems(self.title_group)

    @cached_property
    def train_popularity(self) -> np.ndarray:
        """float64 [N + 1]: occurrences of each item in the train rows (histories and targets)."""
        train = self.splits.get("train")
        if train is None:
            return np.zeros(self.num_items + 1)
        return item_counts(train.histories, train.targets, self.num_items)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DatasetError(f"no '{name}' split (have: {', '.join(self.splits)})", file=self.root)
        return self.splits[name]

    def fingerprint(self) -> str:
        """A short hash of the catalog (titles), stored in runs to refuse a foreign dataset."""
        import hashlib

        h = hashlib.sha256()
        for t in self.titles:
            h.update(t.encode("utf-8") + b"\x00")
        return h.hexdigest()[:16]

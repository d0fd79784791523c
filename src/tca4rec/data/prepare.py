"""Build a release-format dataset from raw interaction logs (Amazon Reviews 2018 and others).

One pipeline serves every source (``build_dataset``): clean titles, merge items with the
same title into one id, k-core filter, order each user's interactions by time, and cut
rows into train/valid/test by a global time cut (``build_splits``, also used by the
synthetic generator). Front-ends only turn their files into two tables: interactions
(user, item, time) and items (item, title, brand). This module's front-end reads the raw
Amazon 2018 files (gzipped JSON lines); ``importer`` reads generic CSV files.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from tca4rec.data.dataset import SPLITS, RecDataset, Split
from tca4rec.errors import ConfigError, DatasetError
from tca4rec.validate import check_seed, loads_json

MAX_TITLE_CHARS = 100
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PrepareConfig:
    """Filtering and splitting options shared by every raw-data front-end."""

    k_core: int = 5  # every user and item keeps at least k interactions
    max_history: int = 10
    split_fractions: tuple[float, float] = (0.8, 0.1)  # train, valid by time; test gets the rest
    sample_train: int | None = None  # keep a seeded random sample of this many train rows
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()  # before minutes of reading raw files, not after

    def validate(self) -> None:
        if self.k_core < 1 or self.max_history < 1:
            raise ConfigError(f"--k-core and --max-history must be >= 1 (got {self.k_core}, {self.max_history})")
        train, valid = self.split_fractions
        if not (0 < train and 0 < valid and train + valid < 1):
            raise ConfigError(f"split fractions must be positive with sum < 1, got {self.split_fractions}")
        if self.sample_train is not None and self.sample_train < 1:
            raise ConfigError(f"--sample-train must be >= 1, got {self.sample_train}")
        check_seed(self.seed, "--seed")


def clean_title(raw: object) -> str:
    """HTML entities and tags out, whitespace collapsed, cut to 100 chars; "" if unusable."""
    if not isinstance(raw, str):
        return ""
    text = _SPACE.sub(" ", _TAG.sub(" ", html.unescape(raw))).strip()
    return text[:MAX_TITLE_CHARS].rstrip()


def build_splits(sequences: list[np.ndarray], times: list[np.ndarray], max_history: int,
                 split_fractions: tuple[float, float]) -> dict[str, Split]:
    """Users' time-ordered item sequences -> train/valid/test rows, like the release.

    One row per interaction after a user's first; its history is the up to ``max_history``
    previous items. All rows are ordered by time and cut at the ``split_fractions`` quantiles,
    so every train row is no later than every valid row, and valid than test. The k-th
    sequence (0-based) belongs to uid k + 1.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    user_ids = np.arange(1, len(sequences) + 1)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if sequences else np.zeros(0, np.int64)
    stamps = np.concatenate([np.asarray(t, dtype=np.int64) for t in times]) if times else np.zeros(0, np.int64)
    owner = np.repeat(user_ids, lengths)
    position = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.flatnonzero(position >= 1)  # flat index of each row's target
    rows = rows[np.lexsort((position[rows], owner[rows], stamps[rows]))]
    width = max(1, min(max_history, int(position.max(initial=1))))
    # History of the target at flat index g: items[g - width .. g - 1], masked to the same user.
    offsets = np.arange(-width, 0)  # [H]
    kept = offsets[None, :] >= -np.minimum(position[rows], width)[:, None]  # [R, H]
    histories = np.where(kept, items[np.maximum(rows[:, None] + offsets[None, :], 0)], 0)
    cuts = (np.cumsum(split_fractions) * len(rows)).astype(np.int64)
    parts = np.split(np.arange(len(rows)), cuts)
    if min(len(p) for p in parts) == 0:
        raise DatasetError(f"only {len(rows)} rows: too few to fill train, valid and test")
    return {name: Split(name, owner[rows[p]], histories[p], items[rows[p]], stamps[rows[p]])
            for name, p in zip(SPLITS, parts)}


def build_dataset(interactions: pd.DataFrame, items: pd.DataFrame, name: str, config: PrepareConfig) -> RecDataset:
    """The shared pipeline. ``interactions``: columns user, item, time (int); ``items``: item,
    title, brand (strings, in source order: the first item with a title keeps it).

    Keys become integer codes first, so dedup and k-core are numpy work on millions of rows.
    """
    config.validate()
    catalog = items.assign(title=items["title"].map(clean_title)).drop_duplicates("item")
    catalog = catalog[catalog["title"] != ""].reset_index(drop=True)
    # Items with identical titles become one id: the first listed (mapping_iid in the release).
    title_code, _ = pd.factorize(catalog["title"])  # codes in order of first appearance
    canonical_row = np.unique(title_code, return_index=True)[1][title_code]  # [M] first row with that title
    row = pd.Index(catalog["item"].astype(object)).get_indexer(interactions["item"].astype(object))
    known = row >= 0
    item = canonical_row[row[known]]
    user, user_keys = pd.factorize(interactions["user"].to_numpy(object)[known])
    time = interactions["time"].to_numpy(np.int64)[known]
    # One interaction per (user, item): the earliest.
    order = np.lexsort((item, user, time))
    _, first = np.unique(user[order] * len(catalog) + item[order], return_index=True)
    kept = np.sort(order[first])
    user, item, time = _k_core(user[kept], item[kept], time[kept], config.k_core)
    if len(user) == 0:
        raise DatasetError(f"no interactions survive the {config.k_core}-core filter (and title cleaning)")
    # Dense ids in the order of the source keys: items 1..N, users 1..U.
    item_rows = np.unique(item)
    item_rows = item_rows[np.argsort(catalog["item"].to_numpy(object)[item_rows].astype(str), kind="stable")]
    item_id = np.zeros(len(catalog), dtype=np.int64)
    item_id[item_rows] = np.arange(1, len(item_rows) + 1)
    user_codes = np.unique(user)
    user_codes = user_codes[np.argsort(np.asarray(user_keys, dtype=object)[user_codes].astype(str), kind="stable")]
    user_id = np.zeros(len(user_keys), dtype=np.int64)
    user_id[user_codes] = np.arange(1, len(user_codes) + 1)
    uid, iid = user_id[user], item_id[item]
    order = np.lexsort((iid, time, uid))  # by user, then time: uid k + 1 is the k-th sequence
    bounds = np.flatnonzero(np.diff(uid[order])) + 1
    splits = build_splits(np.split(iid[order], bounds), np.split(time[order], bounds), config.max_history,
                          config.split_fractions)
    if config.sample_train is not None and config.sample_train < len(splits["train"]):
        splits["train"] = _sample_rows(splits["train"], config.sample_train, config.seed)
    chosen = catalog.iloc[item_rows]
    titles = [""] + chosen["title"].tolist()
    brands = [""] + chosen["brand"].fillna("").astype(str).tolist()
    raw_ids = [""] + chosen["item"].astype(str).tolist()
    return RecDataset(name, titles, brands, splits, len(user_codes), raw_ids=raw_ids)


def _k_core(user: np.ndarray, item: np.ndarray, time: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop users and items with fewer than k interactions until none is left to drop."""
    while True:
        keep = (np.bincount(user)[user] >= k) & (np.bincount(item)[item] >= k)
        if keep.all():
            return user, item, time
        user, item, time = user[keep], item[keep], time[keep]


def _sample_rows(split: Split, count: int, seed: int) -> Split:
    """A seeded sample of ``count`` rows, kept in time order."""
    rows = np.sort(np.random.default_rng(seed).choice(len(split), size=count, replace=False))
    return Split(split.name, split.users[rows], split.histories[rows], split.targets[rows], split.timestamps[rows])


def read_json_lines(path: Path, fields: dict[str, type | tuple[type, ...]], required: tuple[str, ...]
                    ) -> pd.DataFrame:
    """Gzipped (or plain) JSON lines -> one column per field. Each record's ``required`` fields
    must be present; present fields must have the given type. Errors name file, line, field."""
    if not path.is_file():
        raise DatasetError("missing file", file=path)
    columns: dict[str, list] = {name: [] for name in fields}
    opener = gzip.open if path.suffix == ".gz" else open
    line_number = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:  # a byte-order mark is not part of line 1
            for line_number, line in enumerate(tqdm(f, desc=path.name, unit=" lines", leave=False), start=1):
                if not line.strip():
                    continue
                try:
                    record = loads_json(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"not valid JSON: {e.msg}", file=path, row=line_number) from None
                if not isinstance(record, dict):
                    raise DatasetError("expected a JSON object", file=path, row=line_number)
                for name, kind in fields.items():
                    value = record.get(name)
                    if value is None and name in required:
                        raise DatasetError("missing field", file=path, row=line_number, field=name)
                    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                        raise DatasetError(f"unexpected value {value!r}", file=path, row=line_number, field=name)
                    columns[name].append(value)
    except UnicodeDecodeError as e:
        raise DatasetError(f"not UTF-8 text: {e.reason}", file=path, row=line_number + 1) from None
    except (OSError, EOFError) as e:  # gzip: bad magic number, truncated stream
        raise DatasetError(f"cannot read: {e}", file=path) from None
    return pd.DataFrame(columns)


def prepare_amazon(reviews: str | Path, meta: str | Path, config: PrepareConfig = PrepareConfig()) -> RecDataset:
    """Raw Amazon Reviews 2018 files (``<Category>.json.gz``, ``meta_<Category>.json.gz``)."""
    reviews, meta = Path(reviews), Path(meta)
    log = read_json_lines(reviews, {"reviewerID": str, "asin": str, "unixReviewTime": int},
                          required=("reviewerID", "asin", "unixReviewTime"))
    products = read_json_lines(meta, {"asin": str, "title": str, "brand": str}, required=("asin",))
    interactions = log.rename(columns={"reviewerID": "user", "asin": "item", "unixReviewTime": "time"})
    items = products.rename(columns={"asin": "item"})
    name = reviews.name.removesuffix(".gz").removesuffix(".json")
    return build_dataset(interactions, items, name, config)

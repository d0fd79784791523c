"""Summary statistics of a dataset: what ``tca4rec data stats`` prints, as a plain dict."""

from __future__ import annotations

import numpy as np

from tca4rec.data.dataset import RecDataset


def _summary(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": 0.0, "min": 0.0, "max": 0.0}
    return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}


def dataset_stats(ds: RecDataset) -> dict:
    """Users, items, rows per split, history lengths, title lengths and duplicate titles."""
    titles = ds.titles[1:]
    groups = ds.title_group[1:]
    duplicates = groups != np.arange(1, ds.num_items + 1)  # item repeats an earlier item's title
    splits = {}
    for name, split in ds.splits.items():
        splits[name] = {
            "rows": len(split),
            "users": int(np.unique(split.users).size),
            "history_length": _summary(split.history_lengths),
            "timestamp": {"min": int(split.timestamps.min(initial=0)), "max": int(split.timestamps.max(initial=0))},
        }
    return {
        "name": ds.name,
        "num_users": ds.num_users,
        "num_items": ds.num_items,
        "splits": splits,
        "title_chars": _summary(np.array([len(t) for t in titles])),
        "title_words": _summary(np.array([len(t.split()) for t in titles])),
        "duplicate_title_items": int(duplicates.sum()),
        "duplicate_title_groups": int(np.unique(groups[duplicates]).size),
        "brands": len({b for b in ds.brands[1:] if b}),
    }

"""Ranking metrics shared by CF and LLM evaluation: HR@K and NDCG@K, with bootstrap CIs.

One target per row. The rank of a row is the 1-based position of the first item in its
ranked list whose title group equals the target's (DESIGN.md: a hit is the target or an
item with the identical title); 0 means not found. HR@K = [rank <= K], NDCG@K =
1/log2(rank + 1) if hit else 0.
"""

from __future__ import annotations

import numpy as np

KS = (1, 3, 5, 10)


def hit_ranks(ranked: np.ndarray, targets: np.ndarray, title_group: np.ndarray) -> np.ndarray:
    """ranked: int [R, K] item ids (0 = empty slot); targets: int [R]. Returns int64 [R] ranks."""
    ranked = np.asarray(ranked, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if ranked.ndim != 2 or ranked.shape[0] != targets.shape[0]:
        raise ValueError(f"ranked must be [R, K] with R = len(targets), got {ranked.shape} and {targets.shape}")
    match = (title_group[ranked] == title_group[targets][:, None]) & (ranked > 0)  # [R, K]
    first = match.argmax(axis=1)
    return np.where(match.any(axis=1), first + 1, 0).astype(np.int64)


def per_row_metrics(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, np.ndarray]:
    """Per-row HR@K and NDCG@K arrays (float64 [R]) from hit ranks."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks > 0
    gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        within = hit & (ranks <= k)
        out[f"HR@{k}"] = within.astype(np.float64)
        out[f"NDCG@{k}"] = np.where(within, gain, 0.0)
    return out


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Mean HR@K / NDCG@K over rows."""
    if len(ranks) == 0:
        raise ValueError("cannot compute metrics over zero rows")
    return {name: float(v.mean()) for name, v in per_row_metrics(ranks, ks).items()}


def bootstrap_ci(ranks: np.ndarray, ks: tuple[int, ...] = KS, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence interval of each metric's mean, resampling rows."""
    rows = per_row_metrics(ranks, ks)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ranks), size=(n_boot, len(ranks)))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {name: (float(np.percentile(v[idx].mean(1), lo)), float(np.percentile(v[idx].mean(1), hi)))
            for name, v in rows.items()}


# z_{0.975} + z_{0.80}: a true difference this many standard errors from 0 is found
# significant (two-sided 5%) with 80% probability.
_Z_POWER80 = 1.959964 + 0.841621


def paired_bootstrap(ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str = "NDCG@10", n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """CI of mean(metric_b - metric_a) over the same rows; significant when the CI excludes 0.

    Power: ``mde80`` is the minimum detectable effect, the smallest true difference that
    this many rows detect with 80% power at the 5% level: 2.80 x the bootstrap standard
    error of the mean difference. A non-significant difference with a small MDE says "no
    effect of that size"; with a large MDE it says "too few rows to tell".
    """
    if len(ranks_a) != len(ranks_b):
        raise ValueError("paired bootstrap needs the same rows on both sides")
    k = int(metric.split("@")[1])
    diff = per_row_metrics(ranks_b, (k,))[metric] - per_row_metrics(ranks_a, (k,))[metric]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    se = float(means.std(ddof=1))
    return {"diff": float(diff.mean()), "low": float(lo), "high": float(hi), "significant": bool(lo > 0 or hi < 0),
            "se": se, "mde80": _Z_POWER80 * se, "discordant": int((diff != 0).sum())}


def metrics_record(ranks: np.ndarray, *, split: str, model: str, extra: dict | None = None) -> dict:
    """The JSON layout of ``metrics_<split>.json``, shared by ``cf evaluate`` and ``evaluate``."""
    ci = bootstrap_ci(ranks)
    return {
        "model": model,
        "split": split,
        "rows": int(len(ranks)),
        "metrics": summarize(ranks),
        "ci95": {k: list(v) for k, v in ci.items()},
        **(extra or {}),
    }


def exclude_record(sample_exclude) -> dict:
    """The ``sample_exclude`` entry of a metrics record: the earlier (limit, seed) samples left out, if any."""
    return {"sample_exclude": [[int(n), int(seed)] for n, seed in sample_exclude]} if sample_exclude else {}


def prediction_records(titles: list[str], row_ids: np.ndarray, users: np.ndarray, targets: np.ndarray,
                       ranks: np.ndarray, items: np.ndarray, scores: np.ndarray) -> list[dict]:
    """One ``predictions_<split>.jsonl`` record per row, with titles beside the ids so a person can read it.

    ``titles[i]`` is item i's title (index 0, an empty slot of the ranked list, gets ``None``);
    ``row_ids[r]``: the row's number in the whole split (what pairs rows across runs).
    """
    return [{"row": int(row_ids[r]), "user": int(users[r]), "target": int(targets[r]), "target_title": titles[int(targets[r])],
             "rank": int(ranks[r]), "items": [int(i) for i in items[r]],
             "titles": [titles[int(i)] if i > 0 else None for i in items[r]],
             "scores": [round(float(s), 5) for s in scores[r]]}
            for r in range(len(targets))]

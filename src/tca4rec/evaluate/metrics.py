"""Ranking metrics shared by CF and LLM evaluation: HR@K and NDCG@K, with bootstrap CIs.

One target per row. The rank of a row is the 1-based position of the first item in its
ranked list whose title group equals the target's (DESIGN.md: a hit is the target or an
item with the identical title); 0 means not found. HR@K = [rank <= K], NDCG@K =
1/log2(rank + 1) if hit else 0.
"""

from __future__ import annotations

import math

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


def ratio_ci(sums: np.ndarray, weights: np.ndarray, n_boot: int = 2000, level: float = 0.95,
             seed: int = 0) -> tuple[float, float, float]:
    """sum(sums) / sum(weights), a per-token mean over rows (per-row NLL sums and token counts),
    with its percentile bootstrap CI: rows are resampled, numerator and denominator together."""
    sums, weights = np.asarray(sums, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    lo, hi = np.percentile(sums[idx].sum(1) / weights[idx].sum(1), [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(sums.sum() / weights.sum()), float(lo), float(hi)


# z_{0.975} + z_{0.80}: a true difference this many standard errors from 0 is found
# significant (two-sided 5%) with 80% probability.
_Z_POWER80 = 1.959964 + 0.841621


def paired_bootstrap(ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str = "NDCG@10", n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """``paired_difference`` of a rank metric (``HR@K``: McNemar's exact test, else sign-flip)."""
    k = int(metric.split("@")[1])
    value_a, value_b = per_row_metrics(ranks_a, (k,))[metric], per_row_metrics(ranks_b, (k,))[metric]
    return paired_difference(value_a, value_b, hits=metric.startswith("HR"), n_boot=n_boot, level=level, seed=seed)


def paired_difference(value_a: np.ndarray, value_b: np.ndarray, hits: bool = False, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0, weights: np.ndarray | None = None) -> dict[str, float]:
    """CI of mean(value_b - value_a) over the same rows (a per-row metric: NDCG, a hit, a share);
    with ``weights``, of sum(value_b - value_a) / sum(weights) (values: per-row sums, e.g. NLL
    over a row's tokens; weights: the tokens, the same on both sides), resampling each row's
    value and weight together. Significant when the CI excludes 0 and every one of the three p
    values below is under ``1 - level`` (near the threshold a CI that just excludes 0 can come
    with an exact p above 0.05: the verdict then says no).

    Power: ``mde80`` is the minimum detectable effect, the smallest true difference that
    this many rows detect with 80% power at the 5% level: 2.80 x the bootstrap standard
    error of the mean difference. A non-significant difference with a small MDE says "no
    effect of that size"; with a large MDE it says "too few rows to tell".

    Three two-sided p values come with it, because they disagree near the threshold:
    ``p_normal`` (the difference over its bootstrap SE, normal approximation),
    ``p_bootstrap`` (twice the share of bootstrap means on the far side of 0, at least
    2 / (n_boot + 1)) and
    ``p_exact``: a sign-flip permutation test of the per-row differences, which for
    0/1 values (``hits``: differences of +-1) is McNemar's exact test. ``p`` is the largest of
    the three: the one to use for a single test. The two Monte Carlo p values cannot go below
    their resolution (``p_bootstrap_floor``, ``p_exact_floor``; exact tests: 0): a p at its floor
    says only "at most this", so a multiple-testing claim sets aside a p whose floor is not
    well below its threshold (``evaluate.report.bonferroni_lines``).
    """
    value_a, value_b = np.asarray(value_a, dtype=np.float64), np.asarray(value_b, dtype=np.float64)
    if len(value_a) != len(value_b):
        raise ValueError("a paired test needs the same rows on both sides")
    diff = value_b - value_a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    if weights is None:
        means, mean = diff[idx].mean(1), float(diff.mean())
    else:
        if hits or len(weights) != len(diff):
            raise ValueError("weights need per-row sums on both sides, one weight per row")
        weights = np.asarray(weights, dtype=np.float64)
        means, mean = diff[idx].sum(1) / weights[idx].sum(1), float(diff.sum() / weights.sum())
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    se = float(means.std(ddof=1))
    p_normal = math.erfc(abs(mean) / se / math.sqrt(2)) if se > 0 else 1.0
    # (count + 1) / (n_boot + 1): never 0, whatever the number of resamples resolves.
    p_bootstrap = min(1.0, 2 * (min(int((means <= 0).sum()), int((means >= 0).sum())) + 1) / (n_boot + 1))
    p_exact = mcnemar_exact_p(value_a > 0, value_b > 0) if hits else sign_flip_p(diff, seed=seed)
    p = max(p_normal, p_bootstrap, p_exact)
    significant = bool((lo > 0 or hi < 0) and p < 1 - level)
    return {"diff": mean, "low": float(lo), "high": float(hi), "significant": significant,
            "se": se, "mde80": _Z_POWER80 * se, "discordant": int((diff != 0).sum()),
            "p_normal": p_normal, "p_bootstrap": p_bootstrap, "p_exact": p_exact, "p": p,
            # The smallest p each Monte Carlo test can show (its resolution); the others are exact.
            "n_boot": n_boot, "p_bootstrap_floor": 2 / (n_boot + 1),
            "p_exact_floor": 0.0 if hits else sign_flip_floor(int((diff != 0).sum()))}


EXACT_SIGN_FLIPS = 16  # up to this many nonzero differences every sign pattern is enumerated


def sign_flip_p(diff: np.ndarray, n_perm: int | None = None, seed: int = 0) -> float:
    """Two-sided p of "the per-row differences are symmetric about 0" (paired permutation test).

    Under the null each nonzero difference is as likely negative as positive, so the
    observed |sum| is compared with the |sum| of every sign pattern: exactly when at most
    ``EXACT_SIGN_FLIPS`` rows differ, else over ``n_perm`` random patterns, where
    (1 + count) / (1 + n_perm) is still a valid p (default: 100,000 patterns, fewer when
    more than 2,000 rows differ, so that the work stays near 2e8 multiply-adds). For
    differences of +-1 (HR@K) this is McNemar's exact test (``mcnemar_exact_p``).
    """
    d = np.asarray(diff, dtype=np.float64)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    observed = abs(d.sum()) * (1 - 1e-9)  # float sums of the same terms in another order
    if len(d) <= EXACT_SIGN_FLIPS:
        signs = ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1) * 2 - 1  # [2^n, n]
        return float((np.abs(signs @ d) >= observed).mean())
    n_perm = n_perm or sign_flip_patterns(len(d))
    rng = np.random.default_rng(seed)
    count, chunk = 0, max(1, 2 ** 22 // len(d))  # [chunk, n] sign matrices of at most 4M entries
    for start in range(0, n_perm, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, n_perm - start), len(d)), dtype=np.int8) * 2 - 1
        count += int((np.abs(signs @ d) >= observed).sum())
    return (1 + count) / (1 + n_perm)


def sign_flip_patterns(nonzero: int) -> int:
    """Random sign patterns ``sign_flip_p`` draws for ``nonzero`` differing rows (work near 2e8)."""
    return int(min(100_000, max(10_000, 2e8 // max(nonzero, 1))))


def sign_flip_floor(nonzero: int) -> float:
    """The smallest p ``sign_flip_p`` can return by default: 0 (exact) when it enumerates every pattern."""
    return 0.0 if nonzero <= EXACT_SIGN_FLIPS else 1 / (1 + sign_flip_patterns(nonzero))


def mcnemar_exact_p(hit_a: np.ndarray, hit_b: np.ndarray) -> float:
    """McNemar's exact two-sided test of paired hits: of the rows where exactly one method
    hits, is each as likely to be either? Binomial(n, 1/2) tail, in exact integer arithmetic."""
    hit_a, hit_b = np.asarray(hit_a, dtype=bool), np.asarray(hit_b, dtype=bool)
    b, c = int((hit_b & ~hit_a).sum()), int((hit_a & ~hit_b).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


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

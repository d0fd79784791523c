"""Ranking metrics against a slow, obviously-correct reference, and the bootstrap helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tca4rec.evaluate.metrics import KS, bootstrap_ci, hit_ranks, paired_bootstrap, per_row_metrics, summarize


def reference_metrics(ranked, targets, titles):
    out = {f"{m}@{k}": 0.0 for k in KS for m in ("HR", "NDCG")}
    for row, target in zip(ranked, targets):
        rank = next((i + 1 for i, item in enumerate(row) if item > 0 and titles[item] == titles[target]), None)
        for k in KS:
            if rank is not None and rank <= k:
                out[f"HR@{k}"] += 1 / len(targets)
                out[f"NDCG@{k}"] += 1 / math.log2(rank + 1) / len(targets)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_reference_with_identical_titles(seed):
    rng = np.random.default_rng(seed)
    n_items = 30
    titles = [""] + [f"t{rng.integers(0, 20)}" for _ in range(n_items)]  # many duplicate titles
    group = np.zeros(n_items + 1, dtype=np.int64)
    first = {}
    for i in range(1, n_items + 1):
        group[i] = first.setdefault(titles[i], i)
    ranked = rng.integers(0, n_items + 1, size=(50, 10))  # 0 = empty slot
    targets = rng.integers(1, n_items + 1, size=50)
    got = summarize(hit_ranks(ranked, targets, group))
    want = reference_metrics(ranked, targets, titles)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_bootstrap_ci_contains_mean_and_paired_test_detects_a_real_gap():
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 11, size=400)
    ci = bootstrap_ci(ranks)
    mean = summarize(ranks)
    for name, (lo, hi) in ci.items():
        assert lo <= mean[name] <= hi
    better = np.where(ranks == 0, 1, ranks)  # every miss becomes a hit at rank 1
    assert paired_bootstrap(ranks, better, "HR@10")["significant"]
    same = paired_bootstrap(ranks, ranks, "NDCG@10")
    assert same["diff"] == 0 and not same["significant"]


def test_paired_bootstrap_states_the_minimum_detectable_effect():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 11, 4000), rng.integers(0, 11, 4000)
    out = paired_bootstrap(a, b, "NDCG@10")
    diff = per_row_metrics(b, (10,))["NDCG@10"] - per_row_metrics(a, (10,))["NDCG@10"]
    analytic_se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert out["se"] == pytest.approx(analytic_se, rel=0.1)  # the bootstrap SE of a mean
    assert out["mde80"] == pytest.approx((1.959964 + 0.841621) * out["se"])
    assert out["discordant"] == int((diff != 0).sum())
    # Four times the rows halve the MDE.
    big = paired_bootstrap(np.tile(a, 4), np.tile(b, 4), "NDCG@10")
    assert big["mde80"] == pytest.approx(out["mde80"] / 2, rel=0.1)

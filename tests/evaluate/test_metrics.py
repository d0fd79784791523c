"""Ranking metrics against a slow, obviously-correct reference, and the bootstrap helpers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tca4rec.evaluate.metrics import (
    EXACT_SIGN_FLIPS,
    KS,
    bootstrap_ci,
    hit_ranks,
    mcnemar_exact_p,
    paired_bootstrap,
    paired_difference,
    ratio_ci,
    per_row_metrics,
    sign_flip_p,
    summarize,
)


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


def test_a_ci_that_excludes_zero_is_not_significant_when_the_exact_test_says_otherwise():
    """5 of 200 rows gain a hit, none lose one: the bootstrap CI excludes 0, McNemar's exact
    p is 2 / 2^5 = 0.0625. The verdict follows the most conservative p."""
    a = np.zeros(200, dtype=int)
    b = a.copy()
    b[:5] = 1
    t = paired_bootstrap(a, b, "HR@10")
    assert t["low"] > 0 and t["p_exact"] == 0.0625 and t["p"] == 0.0625
    assert not t["significant"]
    b[:12] = 1  # 12 of 12 discordant: p 2 / 2^12
    assert paired_bootstrap(a, b, "HR@10")["significant"]


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


def _sign_flip_reference(diff: np.ndarray) -> float:
    """Every sign pattern of the nonzero differences, one at a time."""
    d = [x for x in diff if x != 0]
    observed = abs(sum(d))
    extreme = sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed - 1e-12
                  for signs in itertools.product((-1, 1), repeat=len(d)))
    return extreme / 2 ** len(d) if d else 1.0


def _mcnemar_reference(b: int, c: int) -> float:
    """Binomial(n, 1/2): the probability of a split at least as uneven as (b, c), summed outcome by outcome."""
    n = b + c
    return sum(math.comb(n, i) for i in range(n + 1) if abs(i - n / 2) >= abs(b - n / 2)) / 2 ** n


@pytest.mark.parametrize("seed", range(6))
def test_sign_flip_test_enumerates_exactly_and_matches_mcnemar_on_hits(seed):
    rng = np.random.default_rng(seed)
    diff = np.zeros(40)
    idx = rng.choice(40, size=int(rng.integers(1, 12)), replace=False)
    diff[idx] = rng.choice([-1.0, 1.0, 0.5, -0.63, 0.37], size=len(idx))
    assert sign_flip_p(diff) == pytest.approx(_sign_flip_reference(diff))
    hit_a, hit_b = rng.random(60) < 0.3, rng.random(60) < 0.4
    b, c = int((hit_b & ~hit_a).sum()), int((hit_a & ~hit_b).sum())
    assert mcnemar_exact_p(hit_a, hit_b) == pytest.approx(_mcnemar_reference(b, c))
    assert mcnemar_exact_p(hit_a, hit_b) == pytest.approx(sign_flip_p(hit_b.astype(float) - hit_a.astype(float)),
                                                          abs=0.01)  # Monte Carlo beyond 16 discordant rows


def test_sign_flip_monte_carlo_agrees_with_the_exact_answer_on_many_rows():
    rng = np.random.default_rng(3)
    hit_a, hit_b = rng.random(400) < 0.2, rng.random(400) < 0.26  # ~100 discordant rows: Monte Carlo
    diff = hit_b.astype(float) - hit_a.astype(float)
    assert (diff != 0).sum() > EXACT_SIGN_FLIPS
    assert sign_flip_p(diff) == pytest.approx(mcnemar_exact_p(hit_a, hit_b), abs=0.01)
    assert mcnemar_exact_p(hit_a, hit_a) == 1.0 and sign_flip_p(np.zeros(9)) == 1.0


def test_paired_test_reports_three_p_values_and_uses_the_largest():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 12, 800)
    b = a.copy()
    better = rng.choice(800, 60, replace=False)
    b[better] = rng.integers(1, 3, 60)
    for metric in ("NDCG@10", "HR@10"):
        t = paired_bootstrap(a, b, metric)
        assert 0 < t["p_exact"] <= 1 and 0 <= t["p_bootstrap"] <= 1 and 0 < t["p_normal"] <= 1
        assert t["p"] == max(t["p_exact"], t["p_bootstrap"], t["p_normal"])
    hits = paired_bootstrap(a, b, "HR@10")
    assert hits["p_exact"] == mcnemar_exact_p((a > 0) & (a <= 10), (b > 0) & (b <= 10))
    assert paired_bootstrap(a, a, "NDCG@10")["p"] == 1.0


def test_paired_tests_refuse_unpaired_rows():
    ranks = np.array([0, 3, -1, 12])
    with pytest.raises(ValueError, match="same rows on both sides"):
        paired_bootstrap(ranks, ranks[:3])
    with pytest.raises(ValueError, match="same rows on both sides"):
        paired_difference(np.zeros(4), np.zeros(5))


def test_a_per_token_mean_and_its_paired_test_against_a_slow_reference():
    """Per-row NLL sums over rows of different token counts: the mean is per token, and the
    bootstrap resamples each row's sum and count together (checked with a loop over resamples)."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 30, size=40)
    a = rng.gamma(2.0, 1.0, size=40) * tokens
    b = a + rng.normal(0.3, 0.5, size=40) * tokens
    value, low, high = ratio_ci(a, tokens, n_boot=300, seed=5)
    assert value == pytest.approx(a.sum() / tokens.sum())
    draws = np.random.default_rng(5).integers(0, 40, size=(300, 40))
    ref = sorted(sum(a[i] for i in row) / sum(tokens[i] for i in row) for row in draws)
    assert (low, high) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])))

    test = paired_difference(a, b, weights=tokens, n_boot=300, seed=5)
    assert test["diff"] == pytest.approx((b - a).sum() / tokens.sum())
    ref = sorted(sum(b[i] - a[i] for i in row) / sum(tokens[i] for i in row) for row in draws)
    assert (test["low"], test["high"]) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])))
    assert test["se"] == pytest.approx(np.std(ref, ddof=1)) and test["significant"]
    assert test["p_exact"] == sign_flip_p(b - a, seed=5)  # a constant total of tokens: the sums' test
    unweighted = paired_difference(a, b, n_boot=300, seed=5)
    assert unweighted["diff"] == pytest.approx((b - a).mean()) and unweighted["diff"] != pytest.approx(test["diff"])
    with pytest.raises(ValueError, match="one weight per row"):
        paired_difference(a, b, weights=tokens[:3])

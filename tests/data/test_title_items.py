"""Which item a ranked title names (data/title_items.py), against a slow per-cell reference."""

import numpy as np
import pytest

from tca4rec.data import RecDataset, Split
from tca4rec.data.title_items import SameTitleItems


def _reference(items, title_group, scores):
    out = items.copy()
    for r in range(items.shape[0]):
        for c in range(items.shape[1]):
            if items[r, c] == 0:
                continue
            members = [i for i in range(1, len(title_group)) if title_group[i] == title_group[items[r, c]]]
            row_scores = scores if scores.ndim == 1 else scores[r]
            best = max(members, key=lambda i: (np.nan_to_num(row_scores[i], nan=-np.inf), -i))
            out[r, c] = best
    return out


@pytest.mark.parametrize("seed", range(20))
def test_choice_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    titles = [""] + [f"t{x}" for x in rng.integers(0, max(1, n // 2), size=n)]
    group = RecDataset("x", titles, [""] * (n + 1), {}, 1).title_group
    items = rng.integers(0, n + 1, size=(4, 5))
    for scores in (rng.normal(size=n + 1), rng.normal(size=(4, n + 1)), rng.integers(0, 3, size=(4, n + 1)) * 1.0):
        scores = scores.copy()
        scores.flat[rng.integers(0, scores.size, size=2)] = rng.choice([-np.inf, np.nan])
        got = SameTitleItems(group).choose(items, scores)
        assert np.array_equal(got, _reference(items, group, scores))
        assert np.array_equal(group[got], group[items])  # the title never changes


def test_a_title_names_its_best_scored_item_and_ties_go_to_the_smallest_id():
    titles = ["", "pen", "ink", "pen", "pen"]
    group = RecDataset("x", titles, [""] * 5, {}, 1).title_group
    choose = SameTitleItems(group).choose
    assert choose(np.array([[1, 2, 0]]), np.array([0, 1.0, 5.0, 3.0, 2.0])).tolist() == [[3, 2, 0]]
    assert choose(np.array([[4]]), np.array([0, 1.0, 0, 1.0, 1.0])).tolist() == [[1]]


def test_train_popularity_counts_histories_and_targets():
    train = Split("train", np.array([1, 2]), np.array([[0, 1], [1, 3]]), np.array([3, 3]), np.array([0, 0]))
    ds = RecDataset("x", ["", "a", "b", "a"], [""] * 4, {"train": train}, 2)
    assert ds.train_popularity.tolist() == [0, 2, 0, 3]
    assert ds.same_title_items.choose(np.array([[1]]), ds.train_popularity).tolist() == [[3]]

"""The learned fusion's candidates and features against a slow, obvious per-candidate reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tca4rec.fuse.features import FEATURE_NAMES, FEATURES, Candidates, TitleTable, build_candidates


def tiny_catalog(seed: int = 0):
    """40 items under 25 titles (so many share one), with train counts and token lengths per title."""
    rng = np.random.default_rng(seed)
    names = rng.integers(0, 25, size=40)  # item id i + 1 has title names[i]
    first = {}
    title_group = np.zeros(41, dtype=np.int64)
    for item, name in enumerate(names, start=1):
        title_group[item] = first.setdefault(int(name), item)
    popularity = np.concatenate([[0.0], rng.integers(0, 9, size=40).astype(np.float64)])
    tokens_of_name = rng.integers(2, 9, size=25)
    token_lengths = tokens_of_name[names]  # per item column: identical titles, identical tokens
    return SimpleNamespace(title_group=title_group, train_popularity=popularity), token_lengths


def random_rows(dataset, rows: int, beams: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    group = dataset.title_group
    reps = np.unique(group[1:])
    items = np.zeros((rows, beams), dtype=np.int64)
    scores = np.full((rows, beams), -np.inf)
    for r in range(rows):
        found = beams - (r % 3)  # some rows find fewer titles than beams
        titles = rng.choice(reps, size=found, replace=False)
        # Any item of the title may name it (evaluation picks one by the CF model).
        items[r, :found] = [rng.choice(np.flatnonzero(group == t)) for t in titles]
        scores[r, :found] = -np.sort(rng.uniform(3, 40, size=found))  # many decimals: rounded to 5
    logits = rng.normal(0, 3, size=(rows, 40))
    logits[0, group[1:] == reps[0]] = -np.inf  # a title without CF mass
    logits[1, :5] = -np.inf
    histories = np.zeros((rows, 6), dtype=np.int64)
    for r in range(rows):
        n = 1 + r % 6
        histories[r, 6 - n:] = rng.integers(1, 41, size=n)
    histories[2, -1] = items[2, 0]  # the last item's title is a beam
    targets = rng.integers(1, 41, size=rows)
    targets[3] = items[3, 1]
    return items, scores, logits, histories, targets


def reference(dataset, token_lengths, items, scores, logits, histories, k, targets) -> list[tuple]:
    """(row, title id, features, label) per candidate, the slow way."""
    group = dataset.title_group
    members = {}
    for item in range(1, len(group)):
        members.setdefault(int(group[item]), []).append(item)
    out = []
    for r in range(len(items)):
        z = logits[r]
        with np.errstate(divide="ignore"):
            cf = {t: float(np.logaddexp.reduce([z[i - 1] for i in ids])) for t, ids in members.items()}
            total = float(np.logaddexp.reduce(z))
        ranked = sorted((t for t in cf if cf[t] > -math.inf), key=lambda t: (-cf[t], t))[:k]
        beams = [(int(group[i]), round(float(s), 5)) for i, s in zip(items[r], scores[r]) if i > 0]
        beam_titles = [t for t, _ in beams]
        history = [int(group[i]) for i in histories[r] if i > 0]
        for t in beam_titles + [t for t in ranked if t not in beam_titles]:
            if t in beam_titles:
                at = beam_titles.index(t)
                s = beams[at][1]
                llm = [s, at + 1, s - beams[0][1], s / token_lengths[t - 1]]
            else:
                llm = [math.nan, items.shape[1] + 1, math.nan, math.nan]
            cf_rank = ranked.index(t) + 1 if t in ranked else k + 1
            features = llm + [cf[t], cf_rank, cf[t] - cf[ranked[0]], math.exp(cf[t] - total), t in beam_titles,
                              t in ranked, t in history, bool(history) and history[-1] == t,
                              math.log1p(sum(dataset.train_popularity[i] for i in members[t])), len(members[t]),
                              len(history)]
            out.append((r, t, [float(f) for f in features], t == group[targets[r]]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_match_the_slow_reference(seed):
    dataset, token_lengths = tiny_catalog(seed)
    items, scores, logits, histories, targets = random_rows(dataset, rows=7, beams=5, seed=seed)
    table = TitleTable.of(dataset, token_lengths)
    cands = build_candidates(table, items, scores, logits, histories, k=7, targets=targets)
    expected = reference(dataset, token_lengths, items, scores, logits, histories, 7, targets)
    assert cands.num_rows == 7 and cands.features.dtype == np.float64
    assert list(zip(cands.row.tolist(), table.reps[cands.title].tolist())) == [(r, t) for r, t, _, _ in expected]
    np.testing.assert_allclose(cands.features, [f for _, _, f, _ in expected], rtol=1e-12, atol=1e-12)
    assert cands.label.tolist() == [label for *_, label in expected]
    in_llm, in_cf = (cands.features[:, FEATURE_NAMES.index(name)] == 1 for name in ("in_llm", "in_cf"))
    assert (in_llm & ~in_cf).any() and (in_cf & ~in_llm).any() and (in_llm & in_cf).any()  # one expert, or both
    assert (table.size > 1).any() and len(FEATURES) == cands.features.shape[1]


def test_top_lists_and_hit_ranks_follow_the_scores_then_candidate_order():
    dataset, token_lengths = tiny_catalog()
    items, scores, logits, histories, targets = random_rows(dataset, rows=5, beams=4)
    table = TitleTable.of(dataset, token_lengths)
    cands = build_candidates(table, items, scores, logits, histories, k=6, targets=targets)
    ranker = np.random.default_rng(3).integers(0, 4, size=len(cands.row)).astype(np.float64)  # many ties
    titles, best = cands.top(ranker, 3)
    for r in range(5):
        mine = np.flatnonzero(cands.row == r)
        order = sorted(mine, key=lambda c: (-ranker[c], c))[:3]
        assert titles[r].tolist() == cands.title[order].tolist() and best[r].tolist() == ranker[order].tolist()
        hit = [n + 1 for n, c in enumerate(sorted(mine, key=lambda c: (-ranker[c], c))[:3]) if cands.label[c]]
        assert cands.hit_ranks(ranker, 3)[r] == (hit[0] if hit else 0)
    assert (table.items(np.array([[-1, 0]])) == [[0, table.reps[0]]]).all()


def test_concatenated_chunks_are_the_candidates_of_all_rows():
    dataset, token_lengths = tiny_catalog()
    items, scores, logits, histories, targets = random_rows(dataset, rows=6, beams=4)
    table = TitleTable.of(dataset, token_lengths)
    whole = build_candidates(table, items, scores, logits, histories, k=5, targets=targets)
    parts = Candidates.concat([build_candidates(table, items[s], scores[s], logits[s], histories[s], 5, targets[s])
                               for s in (slice(0, 2), slice(2, 6))])
    for name in ("row", "title", "target"):
        assert (getattr(parts, name) == getattr(whole, name)).all()
    np.testing.assert_array_equal(parts.features, whole.features)
    tail = whole.rows(2, 6)
    assert tail.num_rows == 4 and tail.row.min() == 0 and (tail.target == table.column[targets[2:]]).all()

"""Full ranking and hit ranks against a slow, obviously-correct reference."""

from __future__ import annotations

import numpy as np
import torch

from tca4rec.cf.run import _topk_rows
from tca4rec.evaluate.metrics import hit_ranks, summarize


def reference_rank(scores: np.ndarray, target: int, group: np.ndarray, k: int) -> int:
    """Sort items 1..N by (score desc, id asc); 1-based position of the first same-title item."""
    order = sorted(range(1, len(scores)), key=lambda i: (-scores[i], i))[:k]
    for position, item in enumerate(order, start=1):
        if group[item] == group[target]:
            return position
    return 0


def test_topk_and_hit_ranks_match_reference_with_ties_and_duplicate_titles():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, rows, k = int(rng.integers(5, 40)), 8, int(rng.integers(1, 5)) * 2
        k = min(k, n)
        # Few distinct integer scores: many ties, also at the k-th place.
        scores = rng.integers(0, 4, size=(rows, n + 1)).astype(np.float32)
        scores[:, 0] = -np.inf
        group = np.arange(n + 1)
        duplicates = rng.integers(1, n + 1, size=(n // 4, 2))
        for a, b in duplicates:  # identical titles: the later id joins the smaller id's group
            group[max(a, b)] = group[min(a, b)]
        targets = rng.integers(1, n + 1, size=rows)
        ids, top = _topk_rows(torch.from_numpy(scores), k)
        for r in range(rows):
            expected = sorted(range(1, n + 1), key=lambda i: (-scores[r, i], i))[:k]
            assert ids[r].tolist() == expected, trial
            assert np.array_equal(top[r].numpy(), scores[r, expected])
        ranks = hit_ranks(ids.numpy(), targets, group)
        expected_ranks = [reference_rank(scores[r], targets[r], group, k) for r in range(rows)]
        assert ranks.tolist() == expected_ranks
        ndcg = np.mean([1 / np.log2(q + 1) if 0 < q <= min(k, 10) else 0.0 for q in expected_ranks])
        assert np.isclose(summarize(ranks)["NDCG@10"], ndcg)


def test_topk_in_row_chunks_bounded_by_catalog_size_equals_one_pass(monkeypatch):
    import tca4rec.cf.run as cf_run
    from tca4rec.cf.zoo import cf_model_class

    cls = cf_model_class("sasrec")
    model = cls(cls.config_class(), num_items=500, num_users=30)
    users = torch.arange(30)
    histories = torch.randint(0, 501, (30, 10))
    one_pass = cf_run.topk(model, users, histories, k=10)
    seen_rows = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda u, h: seen_rows.append(len(u)) or forward(u, h))
    monkeypatch.setattr(cf_run, "RANKING_CHUNK_ELEMENTS", 4 * 501)  # at most 4 rows of 501 logits per chunk
    chunked = cf_run.topk(model, users, histories, k=10)
    assert max(seen_rows) == 4 and sum(seen_rows) == 30
    assert np.array_equal(one_pass[0], chunked[0]) and np.allclose(one_pass[1], chunked[1])

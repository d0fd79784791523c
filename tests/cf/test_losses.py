"""CF training losses against dense, loop-by-loop float64 references on small random cases."""

from __future__ import annotations

import math

import pytest
import torch

from tca4rec.cf import build_cf_model
from tca4rec.cf.base import sampled_softmax_loss


def reference_cross_entropy(scores: list[float], target: int) -> float:
    """-log softmax(scores)[target], skipping -inf candidates, in float64."""
    finite = [s for s in scores if s != float("-inf")]
    top = max(finite)
    return -(scores[target] - top - math.log(sum(math.exp(s - top) for s in finite)))


@pytest.mark.parametrize("seed", range(4))
def test_sampled_softmax_matches_dense_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    items, rows, dim, k = 12, 7, 5, 6
    table = torch.randn(items + 1, dim, generator=generator, dtype=torch.float64)
    hidden = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(1, items + 1, (rows,), generator=generator)
    negatives = torch.randint(1, items + 1, (k,), generator=generator)
    negatives[0] = labels[0]  # a row's own label among the negatives is dropped for that row
    negatives[1] = negatives[2]  # a negative drawn twice counts twice
    expected = []
    for m in range(rows):
        dot = lambda j: float(sum(hidden[m, d] * table[j, d] for d in range(dim)))  # noqa: E731
        candidates = [dot(int(labels[m]))] + [dot(int(j)) if j != labels[m] else float("-inf") for j in negatives]
        expected.append(reference_cross_entropy(candidates, 0))
    got = sampled_softmax_loss(hidden, table, labels, negatives)
    assert float(got) == pytest.approx(sum(expected) / rows, abs=1e-12)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "caser", "bert4rec"])
@pytest.mark.parametrize("num_negatives", [0, 5])
def test_item_loss_is_full_or_sampled_softmax_over_the_item_table(name, num_negatives):
    items, rows = 9, 6
    torch.manual_seed(0)
    model = build_cf_model(name, items, 4, hidden_size=8, max_history=3, num_negatives=num_negatives).double()
    hidden = torch.randn(rows, model.embedding_dim, dtype=torch.float64)
    labels = torch.randint(1, items + 1, (rows,))
    torch.manual_seed(1)
    got = float(model.item_loss(hidden, labels).detach())
    torch.manual_seed(1)  # the same negatives item_loss drew
    negatives = torch.randint(1, items + 1, (num_negatives,)).tolist()
    table = model.item_embeddings().detach()
    expected = []
    for m in range(rows):
        scores = [float(hidden[m] @ table[j]) for j in range(items + 1)]
        if num_negatives == 0:  # every real item competes; the padding item never does
            expected.append(reference_cross_entropy(scores[1:], int(labels[m]) - 1))
        else:
            candidates = [scores[int(labels[m])]] + [scores[j] if j != labels[m] else float("-inf") for j in negatives]
            expected.append(reference_cross_entropy(candidates, 0))
    assert got == pytest.approx(sum(expected) / rows, abs=1e-10)


def test_bert4rec_cloze_mask_policy():
    torch.manual_seed(0)
    sequence = torch.randint(1, 30, (4000, 6))
    sequence[:, :2] = 0  # left padding is never masked
    sequence[0, 2:5] = 0  # a row with only its target
    model = build_cf_model("bert4rec", 30, 4, hidden_size=8, max_history=5, mask_prob=0.3, last_only_prob=0.25)
    masked = model.cloze_mask(sequence)
    assert not masked[:, :2].any() and masked[0].tolist() == [False] * 5 + [True]
    assert masked.any(dim=1).all()  # every row teaches something
    only_last = masked[:, -1] & ~masked[:, :-1].any(dim=1)
    # P(only the target) = last_only + (1 - last_only) * P(no history item drawn) = 0.25 + 0.75 * 0.7^3
    assert float(only_last.double().mean()) == pytest.approx(0.25 + 0.75 * 0.7 ** 3, abs=0.03)
    # Outside last-only rows an item is masked with probability mask_prob.
    assert float(masked[~only_last, 2:5].double().mean()) == pytest.approx(0.3 / (1 - 0.7 ** 3), abs=0.03)
    everything = build_cf_model("bert4rec", 30, 4, hidden_size=8, max_history=5, mask_prob=1.0).cloze_mask(sequence)
    assert torch.equal(everything, sequence > 0)

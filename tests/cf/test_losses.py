"""CF training losses against dense, loop-by-loop float64 references on small random cases."""

from __future__ import annotations

import math

import pytest
import torch

from tca4rec.cf import build_cf_model
from tca4rec.cf.base import sampled_softmax_loss
from tca4rec.errors import ConfigError


def reference_cross_entropy(scores: list[float], target: int) -> float:
    """-log softmax(scores)[target], skipping -inf candidates, in float64."""
    finite = [s for s in scores if s != float("-inf")]
    top = max(finite)
    return -(scores[target] - top - math.log(sum(math.exp(s - top) for s in finite)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("corrected", [False, True])
def test_sampled_softmax_matches_dense_reference(seed, corrected):
    generator = torch.Generator().manual_seed(seed)
    items, rows, dim, k = 12, 7, 5, 6
    table = torch.randn(items + 1, dim, generator=generator, dtype=torch.float64)
    hidden = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(1, items + 1, (rows,), generator=generator)
    negatives = torch.randint(1, items + 1, (k,), generator=generator)
    negatives[0] = labels[0]  # a row's own label among the negatives is dropped for that row
    negatives[1] = negatives[2]  # a negative drawn twice counts twice
    q = torch.rand(items + 1, generator=generator, dtype=torch.float64) + 0.1
    log_q = (q / q.sum()).log() if corrected else None
    shift = (lambda j: float(log_q[j])) if corrected else (lambda j: 0.0)
    expected = []
    for m in range(rows):
        dot = lambda j: float(sum(hidden[m, d] * table[j, d] for d in range(dim))) - shift(j)  # noqa: E731
        candidates = [dot(int(labels[m]))] + [dot(int(j)) if j != labels[m] else float("-inf") for j in negatives]
        expected.append(reference_cross_entropy(candidates, 0))
    got = sampled_softmax_loss(hidden, table, labels, negatives, log_q)
    assert float(got) == pytest.approx(sum(expected) / rows, abs=1e-12)
    # A uniform draw's correction is one constant for every candidate: it cancels.
    uniform = torch.full((items + 1,), -math.log(items), dtype=torch.float64)
    assert float(sampled_softmax_loss(hidden, table, labels, negatives, uniform)) == pytest.approx(
        float(sampled_softmax_loss(hidden, table, labels, negatives)), abs=1e-12)


def test_logq_correction_makes_popularity_negatives_follow_the_full_softmax_gradient():
    """With many popularity-drawn negatives, the corrected loss's gradient approaches the full
    softmax's; without the correction it stays biased towards pushing popular items down."""
    generator = torch.Generator().manual_seed(0)
    items, rows, dim = 40, 8, 6
    table = torch.randn(items + 1, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(1, items + 1, (rows,), generator=generator)
    q = torch.arange(items + 1, dtype=torch.float64) ** 2  # steeply skewed popularity, item 0 never drawn
    q /= q.sum()

    def gradient(loss_of_hidden) -> torch.Tensor:
        hidden = torch.zeros(rows, dim, dtype=torch.float64, requires_grad=True)
        hidden.data = torch.randn(rows, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        loss_of_hidden(hidden).backward()
        return hidden.grad

    full = gradient(lambda h: torch.nn.functional.cross_entropy((h @ table.T)[:, 1:], labels - 1))
    draws = torch.Generator().manual_seed(2)

    def sampled(log_q):
        return lambda h: torch.stack([sampled_softmax_loss(h, table, labels, torch.multinomial(
            q, 4000, replacement=True, generator=draws), log_q) for _ in range(20)]).mean()

    corrected, uncorrected = gradient(sampled(q.log())), gradient(sampled(None))
    assert (corrected - full).norm() < 0.03 * full.norm()  # 0.011 here
    assert (uncorrected - full).norm() > 0.1 * full.norm()  # 0.19 here


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "caser", "bert4rec"])
@pytest.mark.parametrize("num_negatives", [0, 5])
def test_item_loss_is_full_or_sampled_softmax_over_the_item_table(name, num_negatives):
    items, rows = 9, 6
    torch.manual_seed(0)
    model = build_cf_model(name, items, 4, hidden_size=8, max_history=3, num_negatives=num_negatives,
                           negative_sampling="uniform").double()
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


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_popularity_negatives_are_drawn_from_train_counts_and_corrected(name):
    import numpy as np

    items, rows = 9, 6
    torch.manual_seed(0)
    model = build_cf_model(name, items, 4, hidden_size=8, max_history=3, num_negatives=5,
                           negative_sampling="popularity").double()
    hidden = torch.randn(rows, model.embedding_dim, dtype=torch.float64)
    labels = torch.randint(1, items + 1, (rows,))
    with pytest.raises(ConfigError, match="fit_statistics"):
        model.item_loss(hidden, labels)
    histories = np.array([[0, 1, 2], [2, 2, 3]])
    model.fit_statistics(histories, np.array([2, 9]))
    counts = np.array([0, 1, 4, 1, 0, 0, 0, 0, 0, 1]) + 1.0
    counts[0] = 0
    expected_q = counts / counts.sum()
    assert np.allclose(model.negative_log_q.exp().numpy(), expected_q, atol=1e-7)
    assert "negative_log_q" not in model.state_dict()  # a training statistic, not a weight
    torch.manual_seed(1)
    got = float(model.item_loss(hidden, labels).detach())
    torch.manual_seed(1)  # the same negatives item_loss drew
    negatives = torch.multinomial(model.negative_log_q.exp(), 5, replacement=True)
    assert int(negatives.min()) >= 1
    expected = sampled_softmax_loss(hidden, model.item_embeddings().detach(), labels, negatives,
                                    model.negative_log_q.double())
    assert got == pytest.approx(float(expected), abs=1e-10)


def test_unknown_negative_sampling_is_a_clear_error():
    with pytest.raises(ConfigError, match="negative_sampling must be one of uniform, popularity"):
        build_cf_model("sasrec", 9, 4, negative_sampling="hard")


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

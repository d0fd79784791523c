"""soft_ntp_loss against a dense float64 reference, its alpha = 0 limit, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tca4rec.align import CollaborativeTokenizer, soft_ntp_loss
from tca4rec.errors import ConfigError

EOS, VOCAB = 0, 7  # titles use tokens 1..5; token 6 is never allowed by the trie
TITLES = [[1, 2, 3], [1, 2], [1, 2, 3], [1, 4], [5], [2, 2, 2, 2], [1, 2, 3, 4], [5, 1]]
FORMS = ("mixture", "ce")

LOGIT = st.one_of(st.floats(-8, 8), st.sampled_from([1e4, -1e4, -math.inf]))


@st.composite
def cases(draw):
    titles = draw(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=4), min_size=1, max_size=8))
    batch = draw(st.integers(1, 3))
    cf = torch.tensor(draw(st.lists(LOGIT, min_size=batch * len(titles), max_size=batch * len(titles))),
                      dtype=torch.float64).view(batch, len(titles))
    targets = draw(st.lists(st.integers(0, len(titles) - 1), min_size=batch, max_size=batch))
    alpha = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    extreme = draw(st.booleans())  # LLM logits at +-1e4 as well
    seed = draw(st.integers(0, 2**16))
    return titles, cf, targets, alpha, extreme, seed


def llm_logits(shape, seed: int, extreme: bool = False, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=gen, dtype=dtype) * 3
    if extreme:
        logits = torch.where(torch.rand(*shape, generator=gen) < 0.3, 1e4 * torch.sign(logits), logits)
    return logits


@settings(max_examples=100, deadline=None)
@given(cases(), st.sampled_from(FORMS), st.booleans(), st.sampled_from([1.0, 4.5]))
def test_loss_matches_reference(ref_labels, ref_loss, case, form, masked, tau):
    titles, cf, targets, alpha, extreme, seed = case
    labels = CollaborativeTokenizer(titles, EOS).soft_labels(cf, torch.tensor(targets), alpha)
    dense, allowed = ref_labels(titles, EOS, cf, targets, alpha, 1.0, VOCAB)
    logits = llm_logits((len(targets), labels.shape[1], VOCAB), seed, extreme).requires_grad_()
    loss = soft_ntp_loss(logits, labels, form=form, masked=masked, tau=tau)
    expected = ref_loss(logits.detach(), dense, allowed, labels.nodes >= 0, form, masked, tau)
    if math.isinf(expected):  # the model gives a labelled token probability 0 (+-1e4 logits)
        assert loss.item() == expected.item()
        return
    assert abs(loss.item() - expected.item()) <= 1e-6
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("form", FORMS)
def test_alpha_zero_is_plain_cross_entropy(form, masked):
    ct = CollaborativeTokenizer(TITLES, EOS)
    labels = ct.soft_labels(torch.randn(4, len(TITLES)), torch.tensor([0, 4, 5, 6]), alpha=0.0)
    logits = llm_logits((4, labels.shape[1], VOCAB), seed=1, dtype=torch.float32)
    if masked:  # plain CE over the trie-allowed tokens only
        allowed = ct.trie.allowed_mask(labels.nodes.clamp(min=0).reshape(-1), VOCAB).view(logits.shape)
        reference_logits = logits.masked_fill(~allowed, -math.inf) / 4.5
    else:
        reference_logits = logits
    plain = F.cross_entropy(reference_logits.reshape(-1, VOCAB), labels.targets.reshape(-1), ignore_index=-100)
    loss = soft_ntp_loss(logits, labels, form=form, masked=masked, tau=4.5 if masked else 1.0)
    assert loss.item() == pytest.approx(plain.item(), abs=1e-6)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64(form, masked):
    cf = torch.tensor([[0.3, -1.0, 2.0, 0.0, -math.inf, 1.0, 0.5, -0.2], [1e4, -1e4, 0.0, 3.0, 1.0, -2.0, 0.0, 0.0]],
                      dtype=torch.float64)
    labels = CollaborativeTokenizer(TITLES, EOS).soft_labels(cf, torch.tensor([6, 1]), alpha=0.4)
    logits = llm_logits((2, labels.shape[1], VOCAB), seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: soft_ntp_loss(x, labels, form=form, masked=masked, tau=1.7), (logits,))


@pytest.mark.parametrize("form", FORMS)
def test_no_nan_gradient_for_extreme_cf_logits_and_alpha_one(form):
    cf = torch.tensor([[1e4, -1e4, -math.inf, 1e4, -1e4, -math.inf, 0.0, -1e4], [-math.inf] * 8])
    labels = CollaborativeTokenizer(TITLES, EOS).soft_labels(cf, torch.tensor([1, 3]), alpha=1.0)
    logits = llm_logits((2, labels.shape[1], VOCAB), seed=3, dtype=torch.float32).requires_grad_()
    for masked in (False, True):
        loss = soft_ntp_loss(logits, labels, form=form, masked=masked)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        logits.grad = None


def test_padding_positions_do_not_count():
    labels = CollaborativeTokenizer(TITLES, EOS).soft_labels(torch.zeros(2, len(TITLES)), torch.tensor([4, 5]))
    logits = llm_logits((2, labels.shape[1], VOCAB), seed=4)
    changed = logits.clone()
    changed[0, 2:] = 1e6  # title [5] + EOS has 2 positions; the rest is padding
    assert soft_ntp_loss(logits, labels).item() == soft_ntp_loss(changed, labels).item()


def test_half_precision_logits_are_read_in_float32():
    labels = CollaborativeTokenizer(TITLES, EOS).soft_labels(torch.randn(2, len(TITLES)), torch.tensor([0, 7]))
    logits = llm_logits((2, labels.shape[1], VOCAB), seed=5, dtype=torch.float32)
    loss = soft_ntp_loss(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(soft_ntp_loss(logits.bfloat16().float(), labels).item(), abs=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(form="kl"), "form"), (dict(tau=0.0), "tau"), (dict(tau=-1.0), "tau"), (dict(tau=math.nan), "tau"),
])
def test_bad_options(kwargs, match):
    labels = CollaborativeTokenizer(TITLES, EOS).soft_labels(torch.zeros(1, len(TITLES)), torch.tensor([0]))
    with pytest.raises(ConfigError, match=match):
        soft_ntp_loss(torch.zeros(1, labels.shape[1], VOCAB), labels, **kwargs)


def test_bad_logit_shapes():
    labels = CollaborativeTokenizer(TITLES, EOS).soft_labels(torch.zeros(1, len(TITLES)), torch.tensor([0]))
    with pytest.raises(ConfigError, match="shape"):
        soft_ntp_loss(torch.zeros(1, labels.shape[1] + 1, VOCAB), labels)
    with pytest.raises(ConfigError, match="shape"):
        soft_ntp_loss(torch.zeros(labels.shape[1], VOCAB), labels)
    with pytest.raises(ConfigError, match="token id 5"):
        soft_ntp_loss(torch.zeros(1, labels.shape[1], 5), labels)

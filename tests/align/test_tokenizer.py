"""CollaborativeTokenizer.soft_labels against the per-prefix reference, exact cases, errors, persistence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tca4rec.align import CollaborativeTokenizer, SoftLabels
from tca4rec.errors import ConfigError

EOS, VOCAB = 0, 6  # titles use tokens 1..5: a tiny alphabet forces shared prefixes and duplicates

# One-token titles, a title that is a prefix of others, duplicates.
FIXED_TITLES = [[1, 2, 3], [1, 2], [1, 2, 3], [1, 4], [5], [2, 2, 2, 2], [1, 2, 3, 4], [5, 1]]

LOGIT = st.one_of(st.floats(-8, 8), st.sampled_from([1e4, -1e4, -math.inf]))


@st.composite
def cases(draw):
    titles = draw(st.lists(st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=4), min_size=1, max_size=10))
    batch = draw(st.integers(1, 4))
    logits = torch.tensor(draw(st.lists(LOGIT, min_size=batch * len(titles), max_size=batch * len(titles))),
                          dtype=torch.float64).view(batch, len(titles))
    targets = draw(st.lists(st.integers(0, len(titles) - 1), min_size=batch, max_size=batch))
    alpha = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    temperature = draw(st.sampled_from([0.5, 1.0, 2.0]))
    return titles, logits, targets, alpha, temperature


@settings(max_examples=150, deadline=None)
@given(cases())
def test_labels_match_reference(ref_labels, case):
    titles, logits, targets, alpha, temperature = case
    ct = CollaborativeTokenizer(titles, EOS)
    labels = ct.soft_labels(logits, torch.tensor(targets), alpha, temperature)
    expected, allowed = ref_labels(titles, EOS, logits, targets, alpha, temperature, VOCAB)
    # Logits handed over in trie order give the same labels, bit for bit.
    permuted = ct.soft_labels(logits[:, ct.trie.order], torch.tensor(targets), alpha, temperature, trie_order=True)
    assert torch.equal(permuted.position, labels.position) and torch.equal(permuted.weight, labels.weight)
    dense = labels.to_dense(VOCAB)
    assert dense.shape == expected.shape
    assert (dense - expected).abs().max() <= 1e-6
    # The support is exactly the children of each position's node.
    support = torch.zeros_like(allowed)
    support.view(-1, VOCAB)[labels.position, labels.index] = True
    assert torch.equal(support, allowed)
    lengths = torch.tensor([len(titles[t]) + 1 for t in targets])
    real = torch.arange(dense.shape[1]) < lengths[:, None]
    assert torch.allclose(dense.sum(-1)[real], torch.ones(int(real.sum()), dtype=torch.float64), atol=1e-12)
    assert torch.equal(real, labels.nodes >= 0)
    assert torch.equal(real, labels.targets != -100)


def test_targets_and_nodes_follow_the_trie():
    ct = CollaborativeTokenizer(FIXED_TITLES, EOS)
    targets = torch.tensor([6, 4, 1])
    labels = ct.soft_labels(torch.randn(3, len(FIXED_TITLES)), targets)
    assert labels.targets.tolist() == [[1, 2, 3, 4, 0], [5, 0, -100, -100, -100], [1, 2, 0, -100, -100]]
    for b, t in enumerate(targets.tolist()):
        seq = FIXED_TITLES[t] + [EOS]
        assert labels.nodes[b, : len(seq)].tolist() == [ct.trie.walk(seq[:k]) for k in range(len(seq))]
        assert (labels.nodes[b, len(seq):] == -1).all()


def test_alpha_zero_is_exactly_one_hot_without_a_pass_over_the_logits(monkeypatch):
    ct = CollaborativeTokenizer(FIXED_TITLES, EOS)
    logits, targets = torch.randn(4, len(FIXED_TITLES)) * 5, torch.tensor([0, 3, 5, 7])
    mixed = ct.soft_labels(logits, targets, alpha=0.5)

    def no_sums(*args, **kwargs):
        raise AssertionError("alpha 0 needs no CF mass")

    monkeypatch.setattr(CollaborativeTokenizer, "_prefix_sums", no_sums)
    labels = ct.soft_labels(logits, targets, alpha=0.0)
    dense = labels.to_dense(VOCAB)
    onehot = torch.nn.functional.one_hot(labels.targets.clamp(min=0), VOCAB).double() * (labels.targets >= 0)[..., None]
    assert torch.equal(dense, onehot)
    # The same support as any alpha: the masked loss reads each position's children from it.
    assert torch.equal(labels.position, mixed.position) and torch.equal(labels.index, mixed.index)


def test_duplicate_titles_add_their_mass():
    ct = CollaborativeTokenizer([[1], [1], [2]], EOS)
    labels = ct.soft_labels(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([2]), alpha=1.0)
    assert labels.to_dense(3)[0, 0, 1:].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-15)


def test_tiny_subtree_keeps_its_relative_precision():
    # Everything below prefix [1] sits 50 nats under the global max: a global prefix sum of
    # exp(z - max z) would lose it to cancellation; the split below [1] must stay 1:e^-1.
    titles = [[2], [1, 3], [1, 4]]
    logits = torch.tensor([[0.0, -50.0, -51.0]], dtype=torch.float64)
    labels = CollaborativeTokenizer(titles, EOS).soft_labels(logits, torch.tensor([1]), alpha=1.0)
    split = labels.to_dense(5)[0, 1, 3:5]
    assert split.tolist() == pytest.approx([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))], rel=1e-12)


def test_all_minus_inf_below_a_node_falls_back_to_one_hot():
    titles = [[1, 2], [1, 3], [4]]
    logits = torch.tensor([[-math.inf, -math.inf, 0.0], [-math.inf] * 3])
    labels = CollaborativeTokenizer(titles, EOS).soft_labels(logits, torch.tensor([0, 0]), alpha=0.3)
    dense = labels.to_dense(5)
    assert not dense.isnan().any()
    # Row 0: the root still has mass (item 2), so q puts everything on token 4; below [1] it is one-hot.
    assert dense[0, 0].tolist() == pytest.approx([0, 0.7, 0, 0, 0.3])
    assert dense[0, 1].tolist() == [0, 0, 1, 0, 0] and dense[0, 2].tolist() == [1, 0, 0, 0, 0]
    # Row 1: nothing has mass anywhere: plain one-hot targets.
    assert torch.equal(dense[1], torch.nn.functional.one_hot(torch.tensor([1, 2, 0]), 5).double())


def test_float32_logits_give_the_same_labels_and_to_keeps_every_field():
    ct = CollaborativeTokenizer(FIXED_TITLES, EOS)
    logits = torch.randn(3, len(FIXED_TITLES), dtype=torch.float64)
    a = ct.soft_labels(logits, torch.tensor([0, 1, 2]))
    b = ct.soft_labels(logits.float(), torch.tensor([0, 1, 2]))
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
    moved = b.to("cpu")
    assert isinstance(moved, SoftLabels) and moved.shape == b.shape
    assert all(torch.equal(getattr(moved, f), getattr(b, f)) for f in ("targets", "nodes", "position", "index",
                                                                        "weight"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=-0.1), "alpha"), (dict(alpha=1.5), "alpha"), (dict(alpha=math.nan), "alpha"),
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=math.inf), "temperature"),
])
def test_bad_options(kwargs, match):
    ct = CollaborativeTokenizer(FIXED_TITLES, EOS)
    with pytest.raises(ConfigError, match=match):
        ct.soft_labels(torch.zeros(1, len(FIXED_TITLES)), torch.tensor([0]), **kwargs)


@pytest.mark.parametrize("logits, targets, match", [
    (torch.zeros(1, 8), torch.tensor([8]), r"targets\[0\] = 8"),
    (torch.zeros(2, 8), torch.tensor([0, -1]), r"targets\[1\] = -1"),
    (torch.zeros(1, 7), torch.tensor([0]), "shape"),
    (torch.zeros(2, 8), torch.tensor([0]), "targets must have shape"),
    (torch.zeros(1, 8), torch.tensor([0.0]), "integer"),
    (torch.full((1, 8), math.nan), torch.tensor([0]), "NaN"),
    (torch.full((1, 8), math.inf), torch.tensor([0]), r"\+inf"),
])
def test_bad_inputs(logits, targets, match):
    with pytest.raises(ConfigError, match=match):
        CollaborativeTokenizer(FIXED_TITLES, EOS).soft_labels(logits, targets)


def test_bad_catalogs():
    with pytest.raises(ConfigError, match="empty title"):
        CollaborativeTokenizer([[1, 2], []], EOS)
    with pytest.raises(ConfigError, match="zero items"):
        CollaborativeTokenizer([], EOS)
    with pytest.raises(ConfigError, match="too small"):
        CollaborativeTokenizer([[7]], EOS).soft_labels(torch.zeros(1, 1), torch.tensor([0])).to_dense(5)


def test_save_load_round_trip(tmp_path):
    ct = CollaborativeTokenizer(FIXED_TITLES, EOS)
    ct.save(tmp_path / "ct.safetensors")
    loaded = CollaborativeTokenizer.load(tmp_path / "ct.safetensors")
    assert loaded.trie.item_token_ids() == FIXED_TITLES and loaded.eos_token_id == EOS
    logits, targets = torch.randn(3, len(FIXED_TITLES)), torch.tensor([0, 4, 6])
    a, b = ct.soft_labels(logits, targets), loaded.soft_labels(logits, targets)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("targets", "nodes", "position", "index", "weight"))


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="no such"):
        CollaborativeTokenizer.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="unreadable"):
        CollaborativeTokenizer.load(tmp_path / "junk.safetensors")
    from tca4rec.io import atomic_save_tensors

    atomic_save_tensors(tmp_path / "other.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(ConfigError, match="not a tca4rec collaborative tokenizer"):
        CollaborativeTokenizer.load(tmp_path / "other.safetensors")


def test_numpy_scalars_and_plain_sequences_are_accepted():
    import numpy as np

    ct = CollaborativeTokenizer(FIXED_TITLES, EOS)
    logits = torch.randn(2, len(FIXED_TITLES))
    a = ct.soft_labels(logits, torch.tensor([1, 2]), alpha=0.25, temperature=2.0)
    b = ct.soft_labels(logits, [1, 2], alpha=np.float32(0.25), temperature=np.float64(2.0))
    assert torch.equal(a.weight, b.weight)


def random_catalog(num_items: int, seed: int) -> list[list[int]]:
    """Titles over tokens 1..5 of length 1..6: deep shared prefixes, duplicates, many leaves."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (num_items,), generator=gen).tolist()
    return [torch.randint(1, VOCAB, (m,), generator=gen).tolist() for m in lengths]


@pytest.mark.parametrize("scale", [1.0, 6.0, 40.0])
def test_float32_fast_path_and_exact_path_match_reference_on_a_larger_catalog(ref_labels, scale):
    # 400 items: shallow nodes hold most of the mass (fast path: prefix-sum differences),
    # deep or low-scoring ones a tiny share (exact path); large scales push many to the latter.
    titles = random_catalog(400, seed=int(scale))
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(6, len(titles), generator=gen) * scale).float()
    logits[0, :200] = -math.inf
    targets = torch.randint(0, len(titles), (6,), generator=gen).tolist()
    ct = CollaborativeTokenizer(titles, EOS)
    labels = ct.soft_labels(logits, torch.tensor(targets), alpha=1.0, temperature=0.7)
    expected, _ = ref_labels(titles, EOS, logits.double(), targets, 1.0, 0.7, VOCAB)
    assert (labels.to_dense(VOCAB) - expected).abs().max() <= 1e-6
    permuted = ct.soft_labels(logits[:, ct.trie.order], torch.tensor(targets), alpha=1.0, temperature=0.7,
                              trie_order=True)
    assert torch.equal(permuted.weight, labels.weight)


def test_fast_path_serves_positions_below_the_root(ref_labels, monkeypatch):
    """Positions below the root whose error bound allows it come from prefix-sum differences (not
    only the dense root block and the exact path), and they match the reference too."""
    import tca4rec.align.tokenizer as tokenizer_module

    titles = random_catalog(400, seed=11)
    ct = CollaborativeTokenizer(titles, EOS)
    gen = torch.Generator().manual_seed(2)
    logits, targets = torch.randn(8, len(titles), generator=gen), torch.randint(0, len(titles), (8,), generator=gen)
    first_exact = []
    exact_q = tokenizer_module.CollaborativeTokenizer._exact_q

    def recording(self, z, columns, temperature, path, lengths, exact_from, *args):
        first_exact.append(exact_from.clone())
        return exact_q(self, z, columns, temperature, path, lengths, exact_from, *args)

    monkeypatch.setattr(tokenizer_module.CollaborativeTokenizer, "_exact_q", recording)
    labels = ct.soft_labels(logits, targets, alpha=1.0)
    expected, _ = ref_labels(titles, EOS, logits.double(), targets.tolist(), 1.0, 1.0, VOCAB)
    assert (labels.to_dense(VOCAB) - expected).abs().max() <= 1e-6
    lengths = ct.trie.lengths[targets]
    exact_from = first_exact[0] if first_exact else lengths
    assert bool((exact_from >= 2).any())  # some sample's position 1 came from the fast path


def test_tiny_node_after_a_heavy_prefix_is_exact(ref_labels):
    """A two-item node whose mass is 1e-13 of the prefix before it in trie order: the prefix-sum
    difference would keep only ~3 correct digits, so the bound must send it to the exact path."""
    titles = [[1, 1]] * 5000 + [[2, 3], [2, 4]]
    logits = torch.zeros(1, len(titles))
    logits[0, -2:] = torch.tensor([-20.0, -21.0])
    target = [len(titles) - 1]
    labels = CollaborativeTokenizer(titles, EOS).soft_labels(logits, torch.tensor(target), alpha=1.0)
    expected, _ = ref_labels(titles, EOS, logits.double(), target, 1.0, 1.0, VOCAB)
    assert (labels.to_dense(VOCAB) - expected).abs().max() <= 1e-9


def test_row_chunks_give_the_same_labels(monkeypatch):
    import tca4rec.align.tokenizer as tokenizer_module

    titles = random_catalog(300, seed=3)
    ct = CollaborativeTokenizer(titles, EOS)
    logits, targets = torch.randn(5, len(titles)) * 4, torch.tensor([0, 7, 99, 250, 299])
    whole = ct.soft_labels(logits, targets, alpha=0.5)
    monkeypatch.setattr(tokenizer_module, "CHUNK_ELEMENTS", 2 * len(titles))  # 2 rows per chunk, 3 chunks
    chunked = ct.soft_labels(logits, targets, alpha=0.5)
    assert torch.equal(whole.position, chunked.position)
    assert torch.equal(whole.weight, chunked.weight)


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", available_devices())
def test_labels_are_built_on_the_tokenizer_device_and_match_the_cpu(ref_labels, device):
    titles = random_catalog(200, seed=5)
    cpu = CollaborativeTokenizer(titles, EOS)
    moved = cpu.to(device)
    assert moved.device.type == device and cpu.device.type == "cpu"  # the original stays where it was
    assert all(t.device.type == device for t in vars(moved.trie).values() if isinstance(t, torch.Tensor))
    assert (moved is cpu) == (device == "cpu")
    logits, targets = torch.randn(4, len(titles)) * 5, torch.tensor([3, 50, 150, 199])
    labels = moved.soft_labels(logits.to(device), targets.to(device), alpha=0.3, temperature=2.0)
    assert all(getattr(labels, f).device.type == device for f in ("targets", "nodes", "position", "index", "weight"))
    reference = cpu.soft_labels(logits, targets, alpha=0.3, temperature=2.0)
    assert torch.equal(labels.position.cpu(), reference.position) and torch.equal(labels.index.cpu(), reference.index)
    assert (labels.weight.cpu() - reference.weight).abs().max() <= 1e-6
    expected, _ = ref_labels(titles, EOS, logits.double(), targets.tolist(), 0.3, 2.0, VOCAB)
    assert (labels.to_dense(VOCAB).cpu() - expected).abs().max() <= 1e-6
    # The trie's own queries run on its device too.
    nodes = moved.trie.step(torch.zeros(2, dtype=torch.long, device=device), torch.tensor([1, 2], device=device))
    assert moved.trie.allowed_mask(nodes, VOCAB).device.type == device
    assert moved.trie.walk(titles[3]) == cpu.trie.walk(titles[3])


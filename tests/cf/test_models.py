"""Every registered CF model obeys the CFModel interface; helpers match slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tca4rec.cf import CF_MODELS, build_cf_model
from tca4rec.cf.base import fit_history, prefix_examples
from tca4rec.errors import ConfigError

TRAINABLE = sorted(name for name, cls in CF_MODELS.items() if cls.trainable)


def small_model(name: str, dataset, **overrides):
    torch.manual_seed(0)
    return build_cf_model(name, dataset.num_items, dataset.num_users, hidden_size=16, **overrides)


def batch(dataset, rows: int = 16):
    train = dataset.split("train")
    return (torch.tensor(train.users[:rows]), torch.tensor(train.histories[:rows]), torch.tensor(train.targets[:rows]))


def test_zoo_is_registered():
    assert {"mostpop", "sasrec", "bert4rec", "gru4rec", "caser"} <= set(CF_MODELS)


@pytest.mark.parametrize("name", sorted(CF_MODELS))
def test_interface_shapes_and_padding_column(name, synth_dataset):
    model = small_model(name, synth_dataset).eval()
    users, histories, targets = batch(synth_dataset)
    model.fit_statistics(synth_dataset.split("train").histories, synth_dataset.split("train").targets)
    with torch.no_grad():
        logits = model(users, histories)
        user = model.user_embedding(users, histories)
        items = model.item_embeddings()
    n = synth_dataset.num_items
    assert logits.shape == (16, n + 1)
    assert torch.isneginf(logits[:, 0]).all() and torch.isfinite(logits[:, 1:]).all()
    assert user.shape == (16, model.embedding_dim) and items.shape == (n + 1, model.embedding_dim)
    torch.testing.assert_close(logits[:, 1:], user @ items[1:].T)
    # A history wider than max_history is cut to its most recent items.
    wide = torch.cat([torch.randint(1, n + 1, (16, 5)), histories], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(users, wide), logits)


@pytest.mark.parametrize("name", TRAINABLE)
def test_seeded_build_is_deterministic_and_loss_decreases(name, synth_dataset):
    users, histories, targets = batch(synth_dataset, 32)
    first, second = small_model(name, synth_dataset, dropout=0.0), small_model(name, synth_dataset, dropout=0.0)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    optimizer = torch.optim.Adam(first.parameters(), lr=3e-2)
    losses = []
    for _ in range(8):
        torch.manual_seed(1)  # the same masks / negatives every step: the loss is then a fixed function
        loss = first.loss(users, histories, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.85 * losses[0]


@pytest.mark.parametrize("name", TRAINABLE)
def test_sequence_models_learn_a_deterministic_transition(name):
    """Every item is followed by f(item): a sequential model must learn it from a few hundred rows.

    This caught BERT4Rec's position embeddings drowning the item identity (N(0, 1) positions
    against N(0, 1/d) items under the input LayerNorm): it sat at the popularity plateau.
    """
    generator = torch.Generator().manual_seed(0)
    num_items, rows = 100, 512
    sequence = [torch.randint(1, num_items + 1, (rows,), generator=generator)]
    for _ in range(5):
        sequence.append((sequence[-1] * 7 + 3) % num_items + 1)
    histories, targets = torch.stack(sequence[:-1], dim=1), sequence[-1]
    users = torch.arange(1, rows + 1)
    torch.manual_seed(0)
    model = build_cf_model(name, num_items, rows, hidden_size=32, max_history=5, dropout=0.0, num_negatives=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        batch = torch.randint(0, rows, (128,), generator=generator)
        loss = model.loss(users[batch], histories[batch], targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model.eval()(users, histories).argmax(dim=1) == targets).float().mean()
    assert accuracy > 0.95


def test_fit_history_keeps_most_recent():
    h = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    assert fit_history(h, 3).tolist() == [[1, 2, 3], [6, 7, 8]]
    assert fit_history(h, 7).tolist() == [[0, 0, 0, 0, 1, 2, 3], [0, 0, 4, 5, 6, 7, 8]]


def test_prefix_examples_match_loop_reference():
    rng = np.random.default_rng(0)
    width = 5
    lengths = rng.integers(0, width + 1, size=12)
    histories = np.zeros((12, width), dtype=np.int64)
    for r, n in enumerate(lengths):
        histories[r, width - n:] = rng.integers(1, 50, size=n)
    targets = rng.integers(1, 50, size=12)
    expected = []
    for r in range(12):
        sequence = [int(i) for i in histories[r] if i > 0] + [int(targets[r])]
        for j in range(1, len(sequence)):
            prefix = sequence[:j][-width:]
            expected.append((r, [0] * (width - len(prefix)) + prefix, sequence[j]))
    rows, prefixes, next_items = prefix_examples(torch.tensor(histories), torch.tensor(targets))
    got = list(zip(rows.tolist(), prefixes.tolist(), next_items.tolist(), strict=True))
    assert sorted(got) == sorted(expected)


def test_bad_names_and_options_are_config_errors(synth_dataset):
    with pytest.raises(ConfigError, match="known: .*sasrec"):
        build_cf_model("sasrex", 10, 10)
    with pytest.raises(ConfigError, match="num_layerz"):
        build_cf_model("sasrec", 10, 10, num_layerz=2)
    with pytest.raises(ConfigError, match="dropout"):
        build_cf_model("gru4rec", 10, 10, dropout=1.5)


@pytest.mark.parametrize("model, options, message", [
    ("sasrec", {"num_heads": 3}, "num_heads 3 must divide hidden_size 64"),  # was a reshape error in torch
    ("bert4rec", {"num_heads": 0}, "num_layers and num_heads must be >= 1"),
    ("sasrec", {"num_layers": 0}, "num_layers and num_heads must be >= 1"),
    ("gru4rec", {"num_layers": 0}, "num_layers must be >= 1"),
    ("caser", {"vertical_filters": 0}, "vertical_filters must be >= 1"),
    ("sasrec", {"lr": float("nan")}, "lr must be in \\(0, 1,000.0\\]"),  # was torch.optim's error
    ("sasrec", {"lr": float("inf")}, "lr must be in"),  # was a run of NaN weights
    ("sasrec", {"lr": 1e300}, "lr must be in"),  # was torch's float overflow
    ("gru4rec", {"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
    ("sasrec", {"epochs": 10**20}, "need epochs in 0..100,000"),  # was an OverflowError in tqdm
    ("mostpop", {"seed": -1}, "seed: -1 is not a seed"),
])
def test_options_torch_would_refuse_deep_inside_are_config_errors(model, options, message):
    with pytest.raises(ConfigError, match=message):
        build_cf_model(model, 10, 10, **options)


def test_a_loss_that_is_not_finite_stops_training_and_saves_nothing(synth_dataset, tmp_path, monkeypatch):
    """As weights blown up by a too-high lr give it (the epoch's mean loss: NaN or inf)."""
    from tca4rec.cf import train as cf_train
    from tca4rec.errors import RunError

    monkeypatch.setattr(cf_train, "_run_epoch", lambda *args: float("nan"))
    with pytest.raises(RunError, match="the training loss became nan in epoch 1 .*nothing was saved"):
        cf_train.train_cf(synth_dataset, "gru4rec", tmp_path / "run", epochs=2, limit=64, progress=False)
    assert not (tmp_path / "run").exists()

"""The synthetic generator: release-like rows, determinism, and both learnable signals."""

from __future__ import annotations

import numpy as np
import pytest

from tca4rec.data import load_dataset
from tca4rec.data.synth import SynthConfig, synthesize, write_synthetic_dataset
from tca4rec.errors import ConfigError


def test_fixture_size_is_what_tests_downstream_expect(synth_dataset):
    sizes = {k: len(v) for k, v in synth_dataset.splits.items()}
    assert 300 <= sizes["train"] <= 2000 and sizes["valid"] >= 50 and sizes["test"] >= 50
    assert synth_dataset.num_items == 300 and synth_dataset.num_users == 200
    assert synth_dataset.splits["train"].histories.shape[1] == 10


def test_same_config_gives_byte_identical_files(tmp_path, synth_dir):
    again = write_synthetic_dataset(tmp_path / "again", SynthConfig(num_items=300, num_users=200, seed=0))
    names = sorted(p.name for p in synth_dir.iterdir())
    assert names == ["data_stat.json", "item.csv", "test.csv", "train.csv", "valid.csv"]
    for name in names:
        assert (again / name).read_bytes() == (synth_dir / name).read_bytes(), name
    other = write_synthetic_dataset(tmp_path / "other", SynthConfig(num_items=300, num_users=200, seed=1))
    assert (other / "train.csv").read_bytes() != (synth_dir / "train.csv").read_bytes()


def test_rows_are_built_like_the_release(synth_dataset):
    splits = [synth_dataset.splits[k] for k in ("train", "valid", "test")]
    for earlier, later in zip(splits, splits[1:]):
        assert earlier.timestamps.max() <= later.timestamps.min()
    # Rebuild every user's full sequence from the rows; each history must be the up-to-10
    # items before its target, oldest first.
    users = np.concatenate([s.users for s in splits])
    stamps = np.concatenate([s.timestamps for s in splits])
    targets = np.concatenate([s.targets for s in splits])
    histories = np.concatenate([s.histories for s in splits])
    for user in np.unique(users)[:60]:
        rows = np.flatnonzero(users == user)
        rows = rows[np.argsort(stamps[rows], kind="stable")]
        assert np.all(np.diff(stamps[rows]) > 0)
        first = histories[rows[0]][histories[rows[0]] > 0]
        assert len(first) == 1  # the user's first interaction only appears as a history
        sequence = [int(first[0])] + targets[rows].tolist()
        for k, row in enumerate(rows, start=1):
            expected = sequence[max(0, k - 10):k]
            assert histories[row][histories[row] > 0].tolist() == expected
            assert (histories[row][:10 - len(expected)] == 0).all()  # left padding
    # Users come back: several rows of one user inside one split.
    assert np.bincount(splits[2].users).max() >= 3


def test_titles_look_like_products(synth_dataset):
    titles = synth_dataset.titles[1:]
    words = np.array([len(t.split()) for t in titles])
    assert 6 <= words.mean() <= 14 and max(len(t) for t in titles) <= 100
    assert len(set(titles)) < len(titles)  # a few re-listed duplicates
    assert (synth_dataset.title_group[1:] != np.arange(1, 301)).sum() >= 1
    for title, brand in zip(titles, synth_dataset.brands[1:]):
        assert title.startswith(brand + " ")
    prefixes = [" ".join(t.split()[:2]) for t in titles]
    assert len(set(prefixes)) < len(titles) / 3  # product lines share a prefix


def hit_rate_at_10(ranked: np.ndarray, targets: np.ndarray) -> float:
    return float((ranked == targets[:, None]).any(axis=1).mean())


def test_collaborative_signal_markov_beats_popularity(synth_dataset):
    train, test = synth_dataset.splits["train"], synth_dataset.splits["test"]
    n = synth_dataset.num_items + 1
    popularity = np.bincount(train.targets, minlength=n).astype(np.float64)
    popularity[0] = -1
    transitions = np.zeros((n, n))
    np.add.at(transitions, (train.histories[:, -1], train.targets), 1.0)
    popular_top = np.argsort(-popularity, kind="stable")[:10]
    # Markov: transition counts from the last item, ties broken by popularity.
    markov_scores = transitions[test.histories[:, -1]] * n + popularity[None, :] / popularity.max()
    markov_top = np.argsort(-markov_scores, axis=1, kind="stable")[:, :10]
    popular_hr = hit_rate_at_10(np.broadcast_to(popular_top, (len(test), 10)), test.targets)
    markov_hr = hit_rate_at_10(markov_top, test.targets)
    assert markov_hr > popular_hr + 0.1, (markov_hr, popular_hr)


def test_semantic_signal_brand_follows_brand(synth_dataset):
    test = synth_dataset.splits["test"]
    brands = np.array(synth_dataset.brands)
    same = (brands[test.targets] == brands[test.histories[:, -1]]).mean()
    _, counts = np.unique(brands[test.targets], return_counts=True)
    chance = ((counts / counts.sum()) ** 2).sum()
    assert same > 3 * chance, (same, chance)


def test_larger_defaults_and_config_errors(tmp_path):
    ds = synthesize(SynthConfig(num_items=2000, num_users=300, seed=3))
    assert ds.num_items == 2000 and len(set(ds.brands[1:])) >= 40
    small = write_synthetic_dataset(tmp_path / "d", SynthConfig(num_items=50, num_users=20))
    assert load_dataset(small).num_items == 50
    for bad in (SynthConfig(num_items=5), SynthConfig(chain_prob=0.8, taste_prob=0.5),
                SynthConfig(line_length=(1, 3)), SynthConfig(split_fractions=(0.9, 0.2)), SynthConfig(seed=-1)):
        with pytest.raises(ConfigError):
            synthesize(bad)

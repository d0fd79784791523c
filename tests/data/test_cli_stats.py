"""``dataset_stats`` against hand counts, and the ``tca4rec data`` commands end to end."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

import tca4rec.cli as cli
from tca4rec.data import load_dataset
from tca4rec.data.stats import dataset_stats


@pytest.fixture
def run_cli(monkeypatch):
    """``tca4rec ...`` with only the data commands registered (other areas may be absent)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("data",))
    return lambda *argv: cli.main([str(a) for a in argv])


def test_stats_match_hand_counts(synth_dataset):
    stats = dataset_stats(synth_dataset)
    assert stats["num_items"] == 300 and stats["num_users"] == 200
    for name, split in synth_dataset.splits.items():
        lengths = [len(split.history(r)) for r in range(len(split))]
        s = stats["splits"][name]
        assert s["rows"] == len(split) and s["users"] == len(set(split.users.tolist()))
        assert s["history_length"] == {"mean": pytest.approx(np.mean(lengths)), "min": min(lengths),
                                       "max": max(lengths)}
    titles = synth_dataset.titles[1:]
    assert stats["title_words"]["max"] == max(len(t.split()) for t in titles)
    assert stats["title_chars"]["min"] == min(len(t) for t in titles)
    assert stats["duplicate_title_items"] == len(titles) - len(set(titles))
    json.dumps(stats)  # plain JSON types only


def test_toys_duplicate_titles(toys_dir):
    stats = dataset_stats(load_dataset(toys_dir))
    assert stats["duplicate_title_items"] == 813 and stats["title_chars"]["max"] == 100


def test_synth_then_stats(run_cli, tmp_path, capsys):
    out = tmp_path / "d"
    assert run_cli("data", "synth", "--out", out, "--items", 120, "--users", 60, "--seed", 4) == 0
    assert load_dataset(out).num_items == 120
    capsys.readouterr()
    assert run_cli("data", "stats", out, "--json") == 0
    assert json.loads(capsys.readouterr().out)["num_users"] == 60
    assert run_cli("data", "stats", out) == 0
    assert "train" in capsys.readouterr().out
    # Refuses to overwrite, with a one-line error and status 2.
    assert run_cli("data", "synth", "--out", out) == 2
    assert capsys.readouterr().err.strip().endswith("output folder already exists; choose a new one")


def test_stats_error_is_one_line(run_cli, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert run_cli("data", "stats", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data_stat.json" in err and "Traceback" not in err


def test_prepare_and_import_commands(run_cli, tmp_path, capsys):
    reviews, meta = [], []
    for k in range(6):
        meta.append({"asin": f"A{k}", "title": f"Puzzle {k} &amp; Box", "brand": "P"})
        for u in range(8):
            reviews.append({"reviewerID": f"u{u}", "asin": f"A{k}", "unixReviewTime": 1000 + 10 * u + k})
    for name, records in (("r.json.gz", reviews), ("m.json.gz", meta)):
        with gzip.open(tmp_path / name, "wt") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
    assert run_cli("data", "prepare", "--reviews", tmp_path / "r.json.gz", "--meta", tmp_path / "m.json.gz",
                   "--out", tmp_path / "amz", "--k-core", 2, "--sample-train", 10) == 0
    ds = load_dataset(tmp_path / "amz")
    assert ds.num_items == 6 and len(ds.splits["train"]) == 10 and ds.titles[1] == "Puzzle 0 & Box"
    events = "".join(f"u{r['reviewerID']},{r['asin']},{r['unixReviewTime']}\n" for r in reviews)
    (tmp_path / "log.csv").write_text("user,movie,t\n" + events)
    (tmp_path / "movies.csv").write_text("movie,title\n" + "".join(f"{m['asin']},\"{m['title']}\"\n" for m in meta))
    assert run_cli("data", "import", "--interactions", tmp_path / "log.csv", "--items", tmp_path / "movies.csv",
                   "--out", tmp_path / "ml", "--user-col", "user", "--item-col", "movie", "--time-col", "t",
                   "--k-core", 2) == 0
    imported = load_dataset(tmp_path / "ml")
    assert imported.titles == ds.titles and len(imported.splits["test"]) == len(ds.splits["test"])
    assert "wrote 6 items" in capsys.readouterr().out
    assert run_cli("data", "import", "--interactions", tmp_path / "log.csv", "--items", tmp_path / "movies.csv",
                   "--out", tmp_path / "ml2", "--user-col", "nobody") == 2
    assert "field 'nobody'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["stats", "synth", "prepare", "import"])
def test_help_has_examples(run_cli, capsys, command):
    with pytest.raises(SystemExit) as info:
        run_cli("data", command, "--help")
    assert info.value.code == 0
    assert f"tca4rec data {command}" in capsys.readouterr().out.split("examples:")[1]

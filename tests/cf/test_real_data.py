"""MostPop on the real Toys_and_Games release matches a direct pandas computation."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from tca4rec.cf import build_cf_model, topk
from tca4rec.data import load_dataset
from tca4rec.evaluate.metrics import hit_ranks, summarize


def test_mostpop_on_toys_matches_pandas(toys_dir):
    dataset = load_dataset(toys_dir)
    train = dataset.split("train")
    model = build_cf_model("mostpop", dataset.num_items, dataset.num_users)
    model.fit_statistics(train.histories, train.targets)
    test = dataset.split("test").head(1000)
    ids, _ = topk(model, test.users, test.histories, k=10)

    rows = pd.read_csv(toys_dir / "train_10000.csv")
    items = [i for h in rows["hist_id"] for i in ast.literal_eval(h)] + rows["iid"].tolist()
    counts = pd.Series(items).value_counts()
    top10 = sorted(counts.index, key=lambda i: (-counts[i], i))[:10]
    assert (ids == np.array(top10)).all()

    titles = pd.read_csv(toys_dir / "item.csv").set_index("iid")["title"]
    targets = pd.read_csv(toys_dir / "test_5000.csv")["iid"].head(1000)
    expected = [next((p for p, item in enumerate(top10, 1) if titles[item] == titles[t]), 0) for t in targets]
    ranks = hit_ranks(ids, test.targets, dataset.title_group)
    assert ranks.tolist() == expected
    ndcg = summarize(ranks)["NDCG@10"]
    assert 0.0 < ndcg < 0.05, "MostPop on Amazon Toys should be weak but not zero"
    assert ndcg == pytest.approx(np.mean([1 / np.log2(r + 1) if r else 0.0 for r in expected]))

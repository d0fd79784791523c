"""Fit the learned fusion's ranker: LightGBM LambdaRank, its settings chosen on held-out valid rows.

The fitting rows are split in order: the first ``1 - holdout`` share fits, the last
``holdout`` share chooses. Every (num_leaves, min_data_in_leaf) of the grid is fit once with
the grid's most trees, and every tree count of the grid is scored as a prefix of that fit:
NDCG@10 of the fused list over every held-out row (a row whose target is no candidate scores
0, as in evaluation). The best wins; ties go to the simpler setting (fewer trees, fewer
leaves, more rows per leaf). Then one model with the chosen settings is fit on all rows.

LightGBM runs deterministic (one thread, row-wise histograms, a fixed seed), so the same rows
and settings give the same model text. The label of a candidate is 1 if it is its row's
target title; rows without the target among their candidates give LambdaRank no gradient.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from tca4rec.errors import ConfigError
from tca4rec.evaluate.metrics import summarize
from tca4rec.fuse.config import FusionConfig
from tca4rec.fuse.features import FEATURE_NAMES, Candidates

SELECTION_METRIC = "NDCG@10"


def lgb_params(config: FusionConfig, num_leaves: int, min_data_in_leaf: int) -> dict:
    return {"objective": "lambdarank", "learning_rate": config.learning_rate, "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf, "seed": config.seed, "deterministic": True,
            "force_row_wise": True, "num_threads": 1, "verbose": -1, "feature_pre_filter": False}


def train_ranker(cands: Candidates, params: dict, trees: int) -> lgb.Booster:
    """One LambdaRank model of ``trees`` trees on ``cands`` (rows are the queries)."""
    sizes = cands.sizes
    data = lgb.Dataset(cands.features, label=cands.label.astype(np.float64), group=sizes[sizes > 0],
                       feature_name=list(FEATURE_NAMES), params=params)
    return lgb.train(params, data, num_boost_round=trees)


def list_metrics(cands: Candidates, scores: np.ndarray, length: int) -> dict[str, float]:
    """HR/NDCG of each row's top ``length`` candidates by ``scores`` (rows without candidates miss)."""
    return summarize(cands.hit_ranks(scores, length))


def fit_ranker(cands: Candidates, config: FusionConfig) -> tuple[lgb.Booster, dict, dict]:
    """The chosen model refit on every row of ``cands``, its settings, and the selection (the grid's
    table; the held-out NDCG@10 of the fusion and of each expert's own order; how often the target
    is a candidate)."""
    if not cands.label.any():
        raise ConfigError(f"none of the {cands.num_rows} fitting rows has its target among the candidates: "
                          "nothing to learn (fit on more --rows, or a larger --k)")
    held_out = config.held_out(cands.num_rows)
    if not 0 < held_out < cands.num_rows:
        raise ConfigError(f"{cands.num_rows} fitting rows: too few to hold out a share of {config.holdout:g}")
    fit, check = cands.rows(0, cands.num_rows - held_out), cands.rows(cands.num_rows - held_out, cands.num_rows)
    grid = config.grid
    table = []
    for num_leaves in grid["num_leaves"]:
        for min_data in grid["min_data_in_leaf"]:
            booster = train_ranker(fit, lgb_params(config, num_leaves, min_data), max(grid["trees"]))
            for trees in sorted(grid["trees"]):
                scores = booster.predict(check.features, num_iteration=trees, num_threads=1)
                found = list_metrics(check, scores, config.beams)
                table.append({"num_leaves": num_leaves, "min_data_in_leaf": min_data, "trees": trees,
                              "NDCG@10": found["NDCG@10"], "HR@10": found["HR@10"]})
    best = max(table, key=lambda r: (r[SELECTION_METRIC], -r["trees"], -r["num_leaves"], r["min_data_in_leaf"]))
    settings = {key: best[key] for key in ("num_leaves", "min_data_in_leaf", "trees")}
    names = list(FEATURE_NAMES)
    # Each expert alone on the same held-out rows: its own order of its candidates (LLM rank, CF rank).
    experts = {name: list_metrics(check, -check.features[:, names.index(f"{name}_rank")],
                                  config.beams)[SELECTION_METRIC] for name in ("llm", "cf")}
    label = cands.label
    recall = {"llm": _share_of_rows(cands, label & (cands.features[:, names.index("in_llm")] > 0)),
              "cf": _share_of_rows(cands, label & (cands.features[:, names.index("in_cf")] > 0)),
              "union": _share_of_rows(cands, label)}
    booster = train_ranker(cands, lgb_params(config, settings["num_leaves"], settings["min_data_in_leaf"]),
                           settings["trees"])
    selection = {"metric": SELECTION_METRIC, "fit_rows": cands.num_rows - held_out, "held_out_rows": held_out,
                 "held_out": {"fusion": best[SELECTION_METRIC], **experts}, "target_in_candidates": recall,
                 "table": table}
    return booster, settings, selection


def _share_of_rows(cands: Candidates, hit: np.ndarray) -> float:
    """The share of rows with a candidate where ``hit`` [C] holds."""
    return float(np.isin(np.arange(cands.num_rows), cands.row[hit]).mean())

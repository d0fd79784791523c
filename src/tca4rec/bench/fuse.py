"""``tca4rec bench fuse``: how long the learned fusion takes to fit, and its share of a recommend call.

Fit: the features of ``--rows`` valid rows (the run's own plain decoding of them when
``predictions_valid.jsonl`` holds that many rows with ``--beams`` beams; otherwise synthetic
beams: random titles with decreasing scores, the target among them in a tenth of the rows,
valid rows repeated when the split is shorter), the CF model's real logits, then the whole
fit: every setting of the default grid on the fitting share, and the refit. Nothing is stored.

Recommend: ``--recommend`` valid histories, one call each as ``tca4rec recommend --fusion``
makes it, with the fusion just fit: each call's beam search (``Recommender.search``) and the
fusion's re-ranking (its CF pass, features, trees and item choice: ``Fusion.rerank``), timed
in turn in the same process. Reported: the re-ranking's share of the whole call.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from tca4rec.bench import write_result
from tca4rec.cf import load_cf_run
from tca4rec.errors import ConfigError, TCA4RecError
from tca4rec.fuse.apply import read_beams
from tca4rec.fuse.config import FusionConfig
from tca4rec.fuse.features import Candidates, TitleTable, candidates_in_chunks
from tca4rec.fuse.ranker import fit_ranker
from tca4rec.fuse.recommend import FusedRecommender
from tca4rec.fuse.store import Fusion
from tca4rec.llm.run import load_llm_run

PLANTED = 0.1  # the share of synthetic rows whose target is one of their beams


def fitting_beams(run, rows, beams: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(item ids [R, beams], scores [R, beams], where they come from) for the fitting rows."""
    try:
        _, row_ids, items, scores = read_beams(run.run_dir, "valid", run.dataset)
        if items.shape[1] == beams and np.array_equal(row_ids[:len(rows)], rows.row_ids):
            return items[:len(rows)], scores[:len(rows)], "the run's plain decoding"
    except TCA4RecError:
        pass  # no decoding of these rows: synthetic beams
    rng = np.random.default_rng(seed)
    items = rng.integers(1, run.dataset.num_items + 1, size=(len(rows), beams))
    planted = rng.random(len(rows)) < PLANTED
    items[planted, rng.integers(0, beams, size=int(planted.sum()))] = rows.targets[planted]
    scores = -np.cumsum(rng.exponential(2.0, size=(len(rows), beams)), axis=1) - 10.0
    return items, scores, "synthetic beams"


def run(args) -> int:
    if args.rows < 4 or args.recommend < 1:
        raise ConfigError("--rows must be >= 4 and --recommend >= 1")
    torch.set_num_threads(args.threads)
    llm = load_llm_run(args.run)
    dataset = llm.dataset
    cf_run = args.cf_run or llm.config.cf
    if cf_run is None:
        raise ConfigError(f"{args.run} has no CF teacher: name a CF run with --cf-run")
    cf_model = load_cf_run(cf_run, dataset)
    valid = dataset.split("valid")
    rows = valid.rows_between(0, args.rows)
    if len(rows) < args.rows:  # a short split: its rows again, for the timing only
        rows = dataclasses.replace(valid, **{name: np.resize(getattr(valid, name), (args.rows, *getattr(
            valid, name).shape[1:])) for name in ("users", "histories", "targets", "timestamps")}, index=None)
    items, scores, source = fitting_beams(llm, rows, args.beams, args.seed)
    config = FusionConfig(rows=args.rows, k=args.k, beams=args.beams)
    table = TitleTable.of(dataset, llm.trie.lengths.numpy())

    started = time.perf_counter()
    cands = Candidates.concat([c for *_, c in candidates_in_chunks(
        table, cf_model, rows.users, rows.histories, items, scores, config.k, rows.targets)])
    featured = time.perf_counter()
    booster, settings, selection = fit_ranker(cands, config)
    fitted = time.perf_counter()
    fits = len(config.grid["num_leaves"]) * len(config.grid["min_data_in_leaf"])
    print(f"fit on {args.rows} rows ({source}, {len(cands.row)} candidates): features {featured - started:.2f} s, "
          f"{fits} grid fits of up to {max(config.grid['trees'])} trees and the refit ({settings}) "
          f"{fitted - featured:.2f} s; {fitted - started:.1f} s in all")

    fusion = Fusion(booster, {"config": dataclasses.asdict(config)}, dataset, table, cf_model)
    fused = FusedRecommender(llm, fusion)
    search_s, rerank_s = [], []
    for row in range(args.recommend):
        history = fused.rows_of([valid.history(row % len(valid))])
        t0 = time.perf_counter()
        beams, beam_scores = fused.search(history, fused.beams, 0.0)
        t1 = time.perf_counter()
        fusion.rerank(history.users, history.histories, beams, beam_scores, fused.beams)
        search_s.append(t1 - t0)
        rerank_s.append(time.perf_counter() - t1)
    share = sum(rerank_s) / (sum(search_s) + sum(rerank_s))
    print(f"recommend --fusion, {args.recommend} histories one at a time: beam search {np.median(search_s):.3f} s, "
          f"re-ranking {np.median(rerank_s) * 1000:.1f} ms per call (medians): the re-ranking is {share:.1%} of a call")
    if args.out:
        write_result(args.out, "fuse", {
            "run": str(args.run), "cf_run": str(cf_run), "rows": args.rows, "beams_from": source, "k": args.k,
            "beams": args.beams, "candidates": int(len(cands.row)), "features_s": featured - started,
            "fit_s": fitted - featured, "settings": settings, "held_out": selection["held_out"],
            "recommend_calls": args.recommend, "search_s": search_s, "rerank_s": rerank_s, "rerank_share": share})
    return 0

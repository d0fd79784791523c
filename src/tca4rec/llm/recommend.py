"""Recommend for a history given as item titles, with a trained LLM run.

Titles must match catalog titles exactly (the prompt uses the catalog's tokenization);
an unknown title is an error that lists the closest catalog titles. The user is unknown,
so CF-based parts (the llara user slot, CF-guided decoding) see user 0 and the given history.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tca4rec.errors import ConfigError


@dataclass(frozen=True)
class Recommendation:
    title: str
    item_id: int
    score: float  # sum of the title's token scores: LLM log-probs (+ beta * CF log-probs when guided)


def history_item_ids(titles: Sequence[str], catalog: Sequence[str], max_history: int) -> list[int]:
    """Item ids of ``titles`` (oldest first; the last ``max_history`` are kept)."""
    index: dict[str, int] = {}
    for item_id in range(1, len(catalog)):
        index.setdefault(catalog[item_id], item_id)
    ids = []
    for title in titles:
        if title not in index:
            close = difflib.get_close_matches(title, list(index), n=3, cutoff=0.5)
            hint = f"; closest catalog titles: {'; '.join(repr(c) for c in close)}" if close else ""
            raise ConfigError(f"--history {title!r} is not a catalog title{hint}")
        ids.append(index[title])
    return ids[-max_history:]


def recommend(run_dir: str | Path, history_titles: Sequence[str], k: int = 10, beams: int | None = None,
              run=None, beta: float | str = 0.0, cf_run: str | Path | None = None,
              length_normalize: bool = False, cf_lookahead: str = "sum") -> list[Recommendation]:
    """The ``k`` best items after ``history_titles`` (``beams`` defaults to max(k, 10)).

    ``run``: an already loaded ``LLMRun`` to reuse (then ``run_dir`` is only informative).
    ``beta``, ``cf_run``, ``length_normalize``, ``cf_lookahead``: CF-guided decoding, as in ``evaluate_llm_run``.
    """
    from tca4rec.data.dataset import Split
    from tca4rec.llm.decoding import evaluate_rows, guide_cf_model, parse_beta, read_tuned_beta
    from tca4rec.llm.run import load_llm_run

    beams = max(k, 10) if beams is None else beams
    if k < 1:
        raise ConfigError(f"--k {k}: must be >= 1")
    if beams < k:
        raise ConfigError(f"--beams {beams}: must be >= --k {k}")
    if not history_titles:
        raise ConfigError("--history needs at least one title")
    beta = read_tuned_beta(Path(run_dir), cf_run, cf_lookahead) if beta == "auto" else parse_beta(beta)
    run = run if run is not None else load_llm_run(run_dir)
    width = run.dataset.split("train").histories.shape[1]
    ids = history_item_ids(history_titles, run.dataset.titles, width)
    history = np.zeros((1, width), dtype=np.int64)
    history[0, width - len(ids):] = ids
    row = Split("recommend", np.zeros(1, dtype=np.int64), history, np.zeros(1, dtype=np.int64),
                np.zeros(1, dtype=np.int64))
    items, scores = evaluate_rows(run.host, run.signals, row, beams=beams, k=k, batch_size=1, desc="recommend",
                                  beta=beta, length_normalize=length_normalize, cf_lookahead=cf_lookahead,
                                  cf_model=guide_cf_model(run, cf_run) if beta > 0 else None)
    return [Recommendation(run.dataset.titles[int(i)], int(i), float(s))
            for i, s in zip(items[0], scores[0]) if i > 0]

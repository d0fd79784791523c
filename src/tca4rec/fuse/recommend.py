"""Recommend with the learned fusion: ``recommend --fusion``, ``--histories`` batch scoring, ``serve``.

``FusedRecommender`` is a ``llm.recommend.Recommender`` whose lists are the fusion's: the same
plain beam search (``search``), then the fusion's CF pass and re-ranking (``Fusion.rerank``),
exactly as ``fuse_predictions`` re-ranks an evaluation's beams, so a history gets the same
fused list from evaluate, recommend and serve. Its scores are the ranker's, not log-probs.
The fusion re-ranks plain decoding: a CF weight beta other than 0 is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tca4rec.fuse.store import Fusion, load_fusion, read_fusion_record
from tca4rec.llm.recommend import HistoryEntry, InputError, Recommendation, Recommender, recommend
from tca4rec.llm.recommend_file import recommend_file
from tca4rec.llm.run import LLMRun


class FusedRecommender(Recommender):
    """A loaded run that ranks by its learned fusion (``beams``: the ones the fusion was fit on)."""

    def __init__(self, run: LLMRun, fusion: Fusion) -> None:
        super().__init__(run, beams=fusion.beams)
        self.fusion = fusion

    @classmethod
    def of(cls, cf_run: str | Path | None = None) -> Callable[[LLMRun], "FusedRecommender"]:
        """A builder from a loaded run, with the run's fusion and ``cf_run`` (default: the fusion's own)."""
        return lambda run: cls(run, load_fusion(run.run_dir, run.signals, cf_run))

    def resolve_beta(self, beta: object, auto_too: bool = False) -> float:
        value = super().resolve_beta(beta, auto_too)
        if value != 0:
            raise InputError(f"beta {beta!r}: the learned fusion re-ranks plain decoding, so beta must be 0 or null",
                             "beta", beta)
        return value

    def resume_key(self) -> dict:
        return {"fusion": self.fusion.describe()}

    def decode(self, histories: Sequence[Sequence[int]], k: int, beta: float = 0.0, batch_size: int | None = None,
               progress: bool = False) -> list[list[Recommendation]]:
        """The fused top ``k`` (1..beams) of each history of item ids."""
        self.resolve_beta(beta)
        self.check_k(k)
        rows = self.rows_of(histories)
        items, scores = self.search(rows, self.beams, 0.0, batch_size, progress)
        return self.recommendations(*self.fusion.rerank(rows.users, rows.histories, items, scores, k))


def recommend_fused(run_dir: str | Path, history_titles: Sequence[HistoryEntry], k: int = 10,
                    cf_run: str | Path | None = None, data: str | Path | None = None,
                    run: LLMRun | None = None, note: Callable[[str], None] | None = None) -> list[Recommendation]:
    """``llm.recommend.recommend`` with the run's learned fusion (``cf_run``: its CF run, by default
    the one it was fit with)."""
    read_fusion_record(Path(run_dir))  # no fusion at all: said before the (slow) load
    return recommend(run_dir, history_titles, k=k, data=data, run=run, note=note,
                     recommender=FusedRecommender.of(cf_run))


def recommend_file_fused(run_dir: str | Path, histories: str | Path, out: str | Path, *, k: int = 10,
                         cf_run: str | Path | None = None, batch_size: int = 8,
                         skip_bad_rows: str | Path | None = None, data: str | Path | None = None) -> dict:
    """``llm.recommend_file.recommend_file`` (batch scoring, resumable) with the run's learned fusion."""
    read_fusion_record(Path(run_dir))
    return recommend_file(run_dir, histories, out, k=k, cf_run=cf_run, batch_size=batch_size,
                          skip_bad_rows=skip_bad_rows, data=data, recommender=FusedRecommender.of(cf_run))

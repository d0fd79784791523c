"""The learned fusion's candidates and their features: one row per (history, candidate title).

A history's candidates are the titles of the LLM's plain beams united with the CF model's
top-K titles. A title stands for every item that has it (``dataset.title_group``), so items
sharing a title are one candidate, as a hit counts them. A title's **CF score** is the
log-sum-exp of its items' logits: the log of its items' summed probability before the row's
normalizer, the title probability CF-guided decoding ranks by. CF ranks order the titles by
that score (ties: the smaller item id). A row's candidates come in a fixed order, the beams
first (best first), then the CF titles not among them (best first): the tie-break of every
ranking made from them.

The LLM's beam scores enter at the 5 decimals the predictions files keep
(``evaluate.metrics.prediction_records``), so a history's fused list is the same whether its
beams come from a file or from a fresh decoding.

Every feature is float64 (``FEATURES``, in the ranker's column order). A candidate the LLM
did not produce has NaN LLM scores: LightGBM sends missing values down a branch of their
own, so "not a beam" is told apart from "a poor beam".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tca4rec.llm.decoding import item_logits

FEATURES: tuple[tuple[str, str], ...] = (
    ("llm_score", "the LLM's beam score: the sum of the title's token log-probs, EOS included (NaN: not a beam)"),
    ("llm_rank", "the title's rank among the beams, 1 = best (beams + 1: not a beam)"),
    ("llm_gap", "llm_score minus the row's best beam score, <= 0 (NaN: not a beam)"),
    ("llm_score_per_token", "llm_score over the title's tokens, EOS included: the length-normalized score "
                            "(NaN: not a beam)"),
    ("cf_score", "the title's CF score: the log-sum-exp of its items' logits"),
    ("cf_rank", "the title's rank by CF score, 1 = best (K + 1: outside the CF top-K)"),
    ("cf_gap", "cf_score minus the row's best title's, <= 0"),
    ("cf_prob", "the CF model's probability of the title: its items' softmax probabilities summed"),
    ("in_llm", "1 if the title is among the LLM's beams"),
    ("in_cf", "1 if the title is among the CF model's top-K titles"),
    ("in_history", "1 if an item of the history has this title"),
    ("is_last", "1 if the history's last item has this title"),
    ("popularity", "log1p of the occurrences of the title's items in the train rows (histories and targets)"),
    ("group_size", "how many catalog items share the title"),
    ("history_length", "items in the history (within the model's history width)"),
)
FEATURE_NAMES = tuple(name for name, _ in FEATURES)
CHUNK_ROWS = 256  # rows whose CF logits are held at once ([rows, N] float64, 80 MB at 40k items)


@dataclass(frozen=True)
class TitleTable:
    """Per-title arrays of a catalog; title column t stands for the items titled like item ``reps[t]``."""

    column: np.ndarray  # int64 [N + 1]: item id -> its title's column (-1 for the padding id 0)
    reps: np.ndarray  # int64 [T]: the smallest item id of each title, ascending
    order: np.ndarray  # int64 [N]: item columns (id - 1) grouped by title column, for segment sums
    starts: np.ndarray  # int64 [T]: where each title's items start in ``order``
    size: np.ndarray  # float64 [T]: the items with the title
    popularity: np.ndarray  # float64 [T]: log1p of the train occurrences of the title's items
    tokens: np.ndarray  # float64 [T]: the title's tokens, EOS included

    @classmethod
    def of(cls, dataset, token_lengths: np.ndarray) -> "TitleTable":
        """``token_lengths``: int [N] the tokens of each item column's title, EOS included (``TitleTrie.lengths``)."""
        group = np.asarray(dataset.title_group, dtype=np.int64)
        reps = np.unique(group[1:])
        column = np.searchsorted(reps, group)
        column[0] = -1
        order = np.argsort(column[1:], kind="stable")
        starts = np.searchsorted(column[1:][order], np.arange(len(reps)))
        size = np.bincount(column[1:], minlength=len(reps)).astype(np.float64)
        popularity = np.log1p(np.bincount(column[1:], weights=dataset.train_popularity[1:], minlength=len(reps)))
        tokens = np.asarray(token_lengths, dtype=np.float64)[reps - 1]
        return cls(column, reps, order, starts, size, popularity, tokens)

    def items(self, titles: np.ndarray) -> np.ndarray:
        """Title columns (-1 = none) -> their smallest item ids (0 = none)."""
        return np.where(titles >= 0, self.reps[np.maximum(titles, 0)], 0)


def cf_title_scores(table: TitleTable, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CF scores of every title float64 [R, T], log-sum-exp over all items [R]) of item-column
    logits [R, N]; -inf where a title has no mass (every item at -inf)."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    mass = np.exp(z - top)
    with np.errstate(divide="ignore"):
        return (np.log(np.add.reduceat(mass[:, table.order], table.starts, axis=1)) + top,
                np.log(mass.sum(axis=1)) + top[:, 0])


@dataclass
class Candidates:
    """The candidates of ``num_rows`` rows, grouped by row in candidate order."""

    num_rows: int
    row: np.ndarray  # int64 [C]
    title: np.ndarray  # int64 [C]: the title's column in the TitleTable
    features: np.ndarray  # float64 [C, F], columns in FEATURE_NAMES order
    target: np.ndarray | None  # int64 [num_rows]: each row's target title column (None: not known)

    @property
    def label(self) -> np.ndarray:
        """bool [C]: the candidate is its row's target title."""
        return self.title == self.target[self.row]

    @property
    def sizes(self) -> np.ndarray:
        """int64 [num_rows]: candidates per row."""
        return np.bincount(self.row, minlength=self.num_rows)

    @classmethod
    def concat(cls, parts: list["Candidates"]) -> "Candidates":
        offsets = np.cumsum([0] + [p.num_rows for p in parts[:-1]])
        return cls(sum(p.num_rows for p in parts), np.concatenate([p.row + o for p, o in zip(parts, offsets)]),
                   np.concatenate([p.title for p in parts]), np.concatenate([p.features for p in parts]),
                   None if any(p.target is None for p in parts) else np.concatenate([p.target for p in parts]))

    def rows(self, start: int, stop: int) -> "Candidates":
        """The candidates of rows ``start``..``stop`` - 1, renumbered from 0."""
        keep = (self.row >= start) & (self.row < stop)
        return Candidates(stop - start, self.row[keep] - start, self.title[keep], self.features[keep],
                          None if self.target is None else self.target[start:stop])

    def top(self, scores: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``length`` best candidates by ``scores`` [C] (ties: candidate order): (title
        columns int64 [R, length], -1 = none; their scores float64 [R, length], -inf = none)."""
        scores = np.asarray(scores, dtype=np.float64)
        order = np.lexsort((-scores, self.row))  # stable: equal scores keep the candidate order
        row = self.row[order]
        place = np.arange(len(order)) - np.searchsorted(row, row)
        keep = place < length
        titles = np.full((self.num_rows, length), -1, dtype=np.int64)
        best = np.full((self.num_rows, length), -np.inf)
        titles[row[keep], place[keep]] = self.title[order][keep]
        best[row[keep], place[keep]] = scores[order][keep]
        return titles, best

    def hit_ranks(self, scores: np.ndarray, length: int) -> np.ndarray:
        """int64 [R]: the 1-based rank of each row's target title in its top ``length`` (0 = not there)."""
        match = self.top(scores, length)[0] == self.target[:, None]
        return np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0)


def build_candidates(table: TitleTable, llm_items: np.ndarray, llm_scores: np.ndarray, cf_logits: np.ndarray,
                     histories: np.ndarray, k: int, targets: np.ndarray | None = None) -> Candidates:
    """The candidates and features of R rows: ``llm_items`` int [R, B] the beams' item ids (0 =
    empty) and ``llm_scores`` [R, B] their scores, ``cf_logits`` [R, N] over item columns,
    ``histories`` int [R, H] left-padded item ids, ``targets`` int [R] item ids (for labels)."""
    llm_items = np.asarray(llm_items, dtype=np.int64)
    histories = np.asarray(histories, dtype=np.int64)
    num_rows, beams = llm_items.shape
    llm = _at_five_decimals(llm_scores)
    title_score, log_total = cf_title_scores(table, cf_logits)
    cf_col = np.argsort(-title_score, axis=1, kind="stable")[:, :k]  # [R, K'] best first; ties: smaller id
    cf_top = np.take_along_axis(title_score, cf_col, axis=1)
    cf_col = np.where(np.isfinite(cf_top), cf_col, -1)  # a title without CF mass is no CF candidate
    beam_col = table.column[llm_items]  # [R, B], -1 = empty
    match = (beam_col[:, :, None] == cf_col[:, None, :]) & (beam_col[:, :, None] >= 0)  # [R, B, K']
    slots = np.concatenate([beam_col, np.where(match.any(axis=1), -1, cf_col)], axis=1)  # [R, B + K']
    row, slot = np.nonzero(slots >= 0)
    col = slots[row, slot]
    beam = slot < beams
    at = np.minimum(slot, beams - 1)
    beam_cf_rank = np.where(match.any(axis=2), match.argmax(axis=2) + 1, k + 1)[row, at]
    cf_rank = np.where(beam, beam_cf_rank, slot - beams + 1)
    score = np.where(beam, llm[row, at], np.nan)
    best = np.where(llm_items[:, 0] > 0, llm[:, 0], np.nan)[row]
    cf = title_score[row, col]
    history = table.column[histories][row]  # [C, H], -1 = padding
    features = np.stack([
        score, np.where(beam, slot + 1, beams + 1), score - best, score / table.tokens[col],
        cf, cf_rank, cf - cf_top[row, 0], np.exp(cf - log_total[row]),
        beam, cf_rank <= k, (history == col[:, None]).any(axis=1), history[:, -1] == col,
        table.popularity[col], table.size[col], (histories > 0).sum(axis=1)[row]], axis=1).astype(np.float64)
    target = None if targets is None else table.column[np.asarray(targets, dtype=np.int64)]
    return Candidates(num_rows, row, col, features, target)


def candidates_in_chunks(table: TitleTable, cf_model: torch.nn.Module, users: np.ndarray, histories: np.ndarray,
                         llm_items: np.ndarray, llm_scores: np.ndarray, k: int, targets: np.ndarray | None = None,
                         ) -> Iterator[tuple[slice, torch.Tensor, Candidates]]:
    """``build_candidates`` over rows ``CHUNK_ROWS`` at a time, each with its CF pass: (the rows,
    their CF logits float32 [rows, N], their candidates)."""
    for start in range(0, len(users), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        logits = item_logits(cf_model, torch.tensor(users[part]), torch.tensor(histories[part]))
        yield part, logits, build_candidates(table, llm_items[part], llm_scores[part], logits.double().numpy(),
                                             histories[part], k, None if targets is None else targets[part])


def _at_five_decimals(scores: np.ndarray) -> np.ndarray:
    """float64 scores rounded as ``prediction_records`` rounds them (Python's correctly rounded ``round``)."""
    values = np.asarray(scores, dtype=np.float64)
    return np.array([round(v, 5) for v in values.ravel().tolist()], dtype=np.float64).reshape(values.shape)

"""Which item a generated title stands for, when several items share that title.

An LLM recommender generates titles, and a title can name several items (Office_Products:
6,414 of 9,913 titles are cut at 50 characters, and 8% of test targets share their title
with another item). A title-level hit does not care which; an item-level hit, a shop's
basket and a served recommendation do. The rule, the same in evaluation, ``recommend`` and
``serve``: among the items with the generated title, take the one with the highest score of
the CF model the ranking has (its teacher, or the model that guides its decoding), and with
no CF model the one most popular in the train rows; ties go to the smallest id. A sequential
CF model makes the same choice itself when it ranks items, so both sides are judged alike.

``SameTitleItems`` keeps the groups of more than one item in one padded table, so the choice
for a whole batch of rankings is two gathers and an argmax.
"""

from __future__ import annotations

import numpy as np


class SameTitleItems:
    """The items of every shared title, from ``title_group`` (item id -> smallest id with its title)."""

    def __init__(self, title_group: np.ndarray) -> None:
        title_group = np.asarray(title_group, dtype=np.int64)
        sizes = np.bincount(title_group[1:], minlength=len(title_group))  # [N + 1] by representative id
        shared = np.flatnonzero(sizes > 1)  # representatives of titles with several items
        self.row_of = np.full(len(title_group), -1, dtype=np.int64)  # representative id -> table row
        self.row_of[shared] = np.arange(len(shared))
        width = int(sizes.max(initial=1))
        self.members = np.zeros((len(shared), max(width, 1)), dtype=np.int64)  # [M, G] ids ascending, 0 = pad
        ids = np.arange(1, len(title_group))
        ids = ids[np.isin(title_group[1:], shared)]  # members of shared titles, ascending
        groups = title_group[ids]
        order = np.argsort(groups, kind="stable")
        ids, groups = ids[order], groups[order]
        starts = np.searchsorted(groups, groups, side="left")
        self.members[self.row_of[groups], np.arange(len(ids)) - starts] = ids
        self.title_group = title_group

    def choose(self, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``items`` int64 [R, k] (any id of each title, 0 = empty) -> the chosen item of each title.

        ``scores``: float [R, N + 1] per-row item scores (a CF model's logits, by item id) or
        float [N + 1] one score for every row (train popularity). Higher wins; ties: smallest id.
        """
        items = np.asarray(items, dtype=np.int64)
        out = items.copy()
        rows = self.row_of[self.title_group[items]]  # [R, k] table row, -1: the title has one item
        r, c = np.nonzero(rows >= 0)
        if len(r) == 0:
            return out
        members = self.members[rows[r, c]]  # [H, G]
        scores = np.asarray(scores, dtype=np.float64)
        picked = scores[members] if scores.ndim == 1 else scores[r[:, None], members]  # [H, G]
        picked = np.where(members > 0, picked, -np.inf)
        picked = np.where(np.isnan(picked), -np.inf, picked)
        # argmax takes the first maximum: members ascend, so a tie goes to the smallest id;
        # a title whose every member scores -inf keeps its smallest id the same way.
        out[r, c] = members[np.arange(len(r)), np.argmax(picked, axis=1)]
        return out

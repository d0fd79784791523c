"""Recommend for histories of catalog titles or item ids, with a trained LLM run.

``Recommender`` is the one path from a history to ranked items: the single-history
``recommend`` (and ``tca4rec recommend --history``), offline batch scoring
(``tca4rec.llm.recommend_file``) and the HTTP service (``tca4rec.serve``) all decode through
it, so the three give the same answers for the same history and settings.

A history entry is a catalog title, matched exactly (the prompt uses the catalog's
tokenization), or an item id 1..N (a JSON number; a string is always a title). A bad entry
is an ``InputError`` naming it (``history[2]``) and, for a title, listing the closest catalog
titles. Only the last ``width`` entries are read (the run's history width). The user is
unknown, so CF-based parts (the llara user slot, CF-guided decoding) see user 0 and the
given history.

Decoding several histories together gives each the answer it gets alone: beams are chosen
within each row, and prompts are left-padded behind an attention mask. A search kept to the
top K returns, as its first k, the top k (k <= K): the early stop drops only beams that can
no longer reach the pool of finished titles, so callers may decode rows asking for different
k at once with the largest k and slice. Both are tested (tests/serve).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD, check_lookahead
from tca4rec.data.dataset import Split
from tca4rec.errors import ConfigError
from tca4rec.llm.decoding import evaluate_rows, guide_cf_model, parse_beta, read_tuned_beta
from tca4rec.llm.run import LLMRun, load_llm_run

SHOWN_CHARS = 200  # an unknown title is quoted up to this many characters in its error

HistoryEntry = str | int


@dataclass(frozen=True)
class Recommendation:
    title: str
    item_id: int
    score: float  # sum of the title's token scores: LLM log-probs (+ beta * CF log-probs when guided)


class InputError(ConfigError):
    """A bad request value: ``field`` names it (``history[2]``, ``k``, ``beta``), ``value`` is what was given."""

    def __init__(self, message: str, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class Catalog:
    """Item titles and the lookup from a history entry (title or item id) to an item id."""

    def __init__(self, titles: Sequence[str]) -> None:
        self.titles = titles
        self.num_items = len(titles) - 1
        self._index: dict[str, int] = {}
        for item_id in range(1, len(titles)):
            self._index.setdefault(titles[item_id], item_id)  # identical titles: the first item
        self._keys = list(self._index)
        # difflib's ratio is at most 2 * len(title) / (len(entry) + len(title)): an entry over three
        # times the longest title has no title at cutoff 0.5, and comparing it would only cost time.
        self._suggest_up_to = 3 * max(map(len, self._keys), default=0)

    def item_id(self, entry: object, position: int, suggest: bool = True) -> int:
        """The item id of one history entry; ``suggest``: list close titles for an unknown one (slower)."""
        field = f"history[{position}]"
        if isinstance(entry, str):
            if entry in self._index:
                return self._index[entry]
            suggest = suggest and len(entry) <= self._suggest_up_to
            close = difflib.get_close_matches(entry, self._keys, n=3, cutoff=0.5) if suggest else []
            hint = f"; closest catalog titles: {'; '.join(repr(c) for c in close)}" if close else ""
            shown = repr(entry) if len(entry) <= SHOWN_CHARS else f"{entry[:SHOWN_CHARS]!r}... ({len(entry):,} chars)"
            raise InputError(f"{field} {shown} is not a catalog title{hint}", field, entry)
        if isinstance(entry, int) and not isinstance(entry, bool):
            if 1 <= entry <= self.num_items:
                return entry
            raise InputError(f"{field} {entry} is not an item id (1..{self.num_items})", field, entry)
        raise InputError(f"{field} {entry!r} is neither a title (string) nor an item id (integer)", field, entry)

    def item_ids(self, history: Sequence[object], width: int, max_entries: int | None = None,
                 suggest: bool = True) -> list[int]:
        """Item ids of ``history`` (oldest first); the last ``width`` are kept."""
        if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
            raise InputError(f"history must be a list of titles or item ids, got {history!r}", "history", history)
        if len(history) == 0:
            raise InputError("history is empty: give at least one title or item id", "history", [])
        if max_entries is not None and len(history) > max_entries:
            raise InputError(f"history has {len(history)} entries, at most {max_entries} are accepted "
                             f"(the model reads the last {width})", "history", len(history))
        return [self.item_id(entry, i, suggest) for i, entry in enumerate(history)][-width:]


def history_item_ids(titles: Sequence[HistoryEntry], catalog: Sequence[str], max_history: int) -> list[int]:
    """Item ids of ``titles`` (titles or item ids, oldest first; the last ``max_history`` are kept)."""
    return Catalog(catalog).item_ids(titles, max_history)


class Recommender:
    """A loaded run that ranks items after histories, with fixed beam width and default CF weight.

    ``beta``: the default CF weight of CF-guided decoding (a number, or "auto" for the one
    ``tca4rec tune-beta`` stored); ``cf_run``: the CF run whose logits guide (default: the
    run's teacher; without either, only beta 0 is possible); ``cf_lookahead``: how the guided
    search scores a partial title (``sum`` or ``max``, see ``tca4rec.align.guidance``).
    """

    def __init__(self, run: LLMRun, *, beams: int = 10, beta: float | str = 0.0, cf_run: str | Path | None = None,
                 length_normalize: bool = False, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> None:
        if beams < 1:
            raise ConfigError(f"--beams {beams}: must be >= 1")
        self.run = run
        self.beams = beams
        self.cf_run = cf_run
        self.cf_model = guide_cf_model(run, cf_run)
        self.length_normalize = length_normalize
        self.cf_lookahead = check_lookahead(cf_lookahead)
        self.catalog = Catalog(run.dataset.titles)
        self.width = int(run.dataset.split("train").histories.shape[1])
        self.beta = self.resolve_beta(read_tuned_beta(run.run_dir, cf_run, cf_lookahead) if beta == "auto" else beta,
                                      auto_too=True)

    def item_ids(self, history: Sequence[object], max_entries: int | None = None) -> list[int]:
        """The item ids the model reads of ``history``; a bad entry, or a history whose prompt does not
        fit the model's context, is an ``InputError`` (the service's 422), never a failed decoding."""
        ids = self.catalog.item_ids(history, self.width, max_entries)
        self.check_fits(ids)
        return ids

    def check_fits(self, ids: Sequence[int]) -> None:
        try:
            self.run.host.check_fits(ids)
        except ConfigError as e:
            raise InputError(f"history too long for the model: {e}", "history", len(ids)) from None

    def resume_key(self) -> dict:
        """What its lists depend on besides the run and the decoding options (batch scoring's resume
        key): nothing here; a subclass that re-ranks names its model."""
        return {}

    def check_k(self, k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.beams:
            raise InputError(f"k {k!r} must be an integer in 1..{self.beams} (the beam width)", "k", k)
        return k

    def resolve_beta(self, beta: object, auto_too: bool = False) -> float:
        """``beta`` as a CF weight (None: the default); > 0 needs a CF model. ``auto_too``: the
        caller took "auto" already (the constructor), so an error offers it; a request cannot."""
        if beta is None:
            return self.beta
        try:
            value = parse_beta(beta, auto_too)
        except ConfigError as e:
            raise InputError(str(e).removeprefix("--"), "beta", beta) from None
        if value > 0 and self.cf_model is None:
            raise InputError(f"beta {value:g} needs a CF model: this run has no CF teacher and no --cf-run was given",
                             "beta", beta)
        return value

    def decode(self, histories: Sequence[Sequence[int]], k: int, beta: float, batch_size: int | None = None,
               progress: bool = False) -> list[list[Recommendation]]:
        """The top ``k`` of each history of item ids (from ``item_ids``), decoded ``batch_size`` rows at a time
        (default: all at once). Under torchrun every process must call this; each gets every row's answer."""
        return self.recommendations(*self.search(self.rows_of(histories), k, beta, batch_size, progress))

    def rows_of(self, histories: Sequence[Sequence[int]]) -> Split:
        """Histories of item ids as the rows of a split: left-padded to the width, user 0."""
        history = np.zeros((len(histories), self.width), dtype=np.int64)
        for row, ids in enumerate(histories):
            ids = list(ids)[-self.width:]
            history[row, self.width - len(ids):] = ids
        zeros = np.zeros(len(histories), dtype=np.int64)
        return Split("recommend", zeros, history, zeros, zeros)

    def search(self, rows: Split, k: int, beta: float, batch_size: int | None = None,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The beams behind ``decode``: (item ids int64 [R, k], 0 = none; their scores float32 [R, k])."""
        return evaluate_rows(
            self.run.host, self.run.signals, rows, beams=self.beams, k=k, batch_size=batch_size or len(rows),
            desc="recommend", beta=beta, length_normalize=self.length_normalize, cf_lookahead=self.cf_lookahead,
            cf_model=self.cf_model if beta > 0 else None, progress=progress)

    def recommendations(self, items: np.ndarray, scores: np.ndarray) -> list[list[Recommendation]]:
        """Ranked item ids [R, k] (0 = none) and their scores as one list of ``Recommendation`` per row."""
        titles = self.run.dataset.titles
        return [[Recommendation(titles[int(i)], int(i), float(s)) for i, s in zip(row_items, row_scores) if i > 0]
                for row_items, row_scores in zip(items, scores)]


def recommend(run_dir: str | Path, history_titles: Sequence[HistoryEntry], k: int = 10, beams: int | None = None,
              run: LLMRun | None = None, beta: float | str = 0.0, cf_run: str | Path | None = None,
              length_normalize: bool = False, data: str | Path | None = None,
              note: Callable[[str], None] | None = None, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD,
              recommender: Callable[[LLMRun], Recommender] | None = None) -> list[Recommendation]:
    """The ``k`` best items after ``history_titles`` (titles or item ids; ``beams`` defaults to max(k, 10)).

    The model reads the last H entries (H: the dataset's history width); a longer history is
    cut, and ``note`` (default: a line on stderr) says so.

    ``run``: an already loaded ``LLMRun`` to reuse (then ``run_dir`` and ``data`` are only informative).
    ``beta``, ``cf_run``, ``length_normalize``, ``cf_lookahead``: CF-guided decoding, as in ``evaluate_llm_run``.
    ``recommender``: builds the ``Recommender`` from the loaded run instead of those options (the learned
    fusion's, ``tca4rec.fuse.recommend``).
    """
    beams = max(k, 10) if beams is None else beams
    if k < 1:
        raise ConfigError(f"--k {k}: must be >= 1")
    if beams < k:
        raise ConfigError(f"--beams {beams}: must be >= --k {k}")
    if not history_titles:
        raise ConfigError("--history needs at least one title")
    if beta == "auto":
        beta = read_tuned_beta(Path(run_dir), cf_run, cf_lookahead)  # before the (slow) load: fails fast
    loaded = run if run is not None else load_llm_run(run_dir, data=data)
    ranker = recommender(loaded) if recommender is not None else Recommender(
        loaded, beams=beams, beta=beta, cf_run=cf_run, length_normalize=length_normalize, cf_lookahead=cf_lookahead)
    if len(history_titles) > ranker.width:
        (note or _stderr_note)(f"the history has {len(history_titles)} titles; the model reads the last "
                               f"{ranker.width} (the dataset's history width), the first "
                               f"{len(history_titles) - ranker.width} are not used")
    return ranker.decode([ranker.item_ids(history_titles)], k=k, beta=ranker.beta)[0]


def _stderr_note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)

"""The cells of a study: one CF run or one LLM run of the grid, with its folder and display label.

Both the study runner (``runner.py``) and its report (``report.py``) name cells, so the
cells live below both and the report never imports the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

CF_LABELS = {"mostpop": "MostPop", "sasrec": "SASRec", "bert4rec": "BERT4Rec", "gru4rec": "GRU4Rec", "caser": "Caser"}


@dataclass(frozen=True)
class CFCell:
    dataset: str
    model: str
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.dataset}/cf/{self.model}-s{self.seed}"

    @property
    def label(self) -> str:
        return CF_LABELS.get(self.model, self.model)


@dataclass(frozen=True)
class LLMCell:
    dataset: str
    host: str
    cf: str | None  # None: the host alone, which does not read a CF model
    alpha: float
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.dataset}/llm/{self.host}-{self.cf or 'nocf'}-a{self.alpha:g}-s{self.seed}"

    @property
    def label(self) -> str:
        if self.alpha == 0:
            return self.host if self.cf is None else f"{self.host}({CF_LABELS.get(self.cf, self.cf)})"
        return f"{self.host} + TCA4Rec({CF_LABELS.get(self.cf, self.cf)}, α={self.alpha:g})"


def as_list(value) -> list:
    """A YAML grid entry as a list (a scalar is a list of one)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]

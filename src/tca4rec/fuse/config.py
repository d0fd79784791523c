"""``FusionConfig``: how a learned fusion is fit (rows, candidates, the settings grid), validated.

Free of torch and LightGBM: the command line and a study file check these options before
anything loads. Every bad value is a ``ConfigError`` naming the option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tca4rec.errors import ConfigError

FUSION_DIR = "fusion"  # in the LLM run folder: the ranker's model text and its fusion.json
FUSION_SUFFIX = "_fusion"  # its results beside the plain ones: metrics_<split>_fusion.json, predictions_...
# The ranker's settings chosen on held-out valid rows: LightGBM's tree size, its least rows per
# leaf, and the number of trees (every prefix of the longest fit is scored, so trees cost nothing).
GRID_KEYS = ("num_leaves", "min_data_in_leaf", "trees")
DEFAULT_FUSION_GRID = {"num_leaves": [7, 15, 31], "min_data_in_leaf": [20, 100], "trees": [50, 100, 200, 400]}


@dataclass(frozen=True)
class FusionConfig:
    """The fit of a learned fusion. ``rows``: the first valid rows decoded and fit on; the last
    ``holdout`` share of them chooses the grid's settings before the refit on all of them."""

    rows: int = 2000
    k: int = 20  # the CF model's top-K titles join the LLM's beams as candidates
    beams: int = 10  # the LLM's plain beams (the beam width of its decoding)
    holdout: float = 0.25
    learning_rate: float = 0.05
    seed: int = 0
    grid: dict = field(default_factory=lambda: {key: list(values) for key, values in DEFAULT_FUSION_GRID.items()})

    def __post_init__(self) -> None:
        for name in ("rows", "k", "beams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} {getattr(self, name)}: must be >= 1")
        if not 0 < self.holdout < 1:
            raise ConfigError(f"--holdout {self.holdout}: must be in (0, 1)")
        if not 0 < self.held_out(self.rows) < self.rows:
            raise ConfigError(f"--rows {self.rows}: too few to hold out a share of {self.holdout:g} "
                              "and fit on the rest")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate {self.learning_rate}: must be a finite number > 0")
        if set(self.grid) != set(GRID_KEYS):
            raise ConfigError(f"grid {self.grid!r}: give exactly {', '.join(GRID_KEYS)}, each a list of integers")
        for key, least in zip(GRID_KEYS, (2, 1, 1)):
            values = self.grid[key]
            if (not isinstance(values, list) or not values
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < least for v in values)):
                raise ConfigError(f"grid.{key} {values!r}: a non-empty list of integers >= {least}")

    def held_out(self, rows: int) -> int:
        """How many of ``rows`` fitting rows (the last ones) choose the settings."""
        return int(round(rows * self.holdout))

"""A study's settings (``StudyConfig``, its YAML file) and the demo's (``DemoConfig``), validated.

The whole file is checked once, types first, before the runner creates anything: a wrong
value (``seeds: [zero]``, ``beams: ten``, ``train: {max_steps: abc}``, ``betas: [.inf]``) is
one ``ConfigError`` naming the file, the field and the value. Which CF models exist is
checked by the runner, which loads the zoo; this module stays free of torch, so the command
line can read the demo's defaults at once.

A study file (see ``docs/results/*.yaml``)::

    name: toys-small
    out: runs/toys-small            # relative to the YAML file
    datasets: {Toys_and_Games: ../../../shared/data/amazon2018/Toys_and_Games}
    split: test
    eval_limit: 200                  # test rows (the same rows for every method)
    eval_sample_seed: 0              # optional: a seeded random sample of the split, not its first rows
    eval_sample_exclude: [[1000, 0]] # optional: leave out the rows of earlier (limit, seed) samples
    seeds: [0]
    cf: {epochs: 50}                 # CF training options (CFConfig fields; train_limit: the first N train rows)
    train: {train_limit: 1000, max_steps: 200, batch_size: 4, grad_accum: 1}  # TrainConfig fields
    grid:
      - {host: [tallrec], cf: [sasrec], alpha: [0, 0.1]}
    fusion: {rows: 2000, k: 20}      # optional: each LLM cell's learned fusion, fit on valid rows (docs/fusion.md)
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tca4rec.errors import ConfigError
from tca4rec.fuse.config import FusionConfig
from tca4rec.llm.config import HOSTS, TrainConfig, check_beta
from tca4rec.study.cells import CFCell, LLMCell, as_list
from tca4rec.validate import check_fields, check_name, check_seed, check_value

GRID_KEYS = ("host", "cf", "alpha")
# TrainConfig fields a study sets per cell, never in its 'train' block.
CELL_FIELDS = ("data", "out", "host", "cf", "alpha", "seed")


@dataclass
class StudyConfig:
    """A study's YAML, validated. Paths are resolved against ``base`` (the YAML's folder)."""

    name: str
    out: str
    datasets: dict[str, str | dict]
    grid: list[dict]
    split: str = "test"
    eval_limit: int | None = 200
    eval_sample_seed: int | None = None  # None: the first eval_limit rows; a seed: a random sample of them
    eval_sample_exclude: list[list[int]] = field(default_factory=list)  # [limit, seed] of earlier samples left out
    seeds: list[int] = field(default_factory=lambda: [0])
    beams: int = 10
    eval_batch_size: int = 8  # test rows decoded per model call (x beams sequences); raise it on a GPU
    betas: list[float | str] = field(default_factory=lambda: [0])  # CF-guided decoding weights; "auto": tuned
    beta_tuning: dict = field(default_factory=dict)  # for "auto": {rows: 100, grid: [0, 1, 2, ...]} on valid rows
    # CF-guided decoding: a partial title's CF part, its best title (max, the commands' default) or its
    # prefix's share (sum). A study file that omits it means sum, as it did before max existed.
    cf_lookahead: str = "sum"
    cf: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    base: str = "."
    labels: dict[str, str] = field(default_factory=dict)  # optional display names by cell folder
    # The learned fusion of every LLM cell (FusionConfig fields but beams, which are the study's), fit on
    # the cell's valid rows with the CF model that guides it; None: none.
    fusion: dict | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "StudyConfig":
        """Read a study file; ``overrides`` (``key=value`` or ``train.key=value``, values in YAML)
        replace its fields, e.g. ``train.max_minutes=4`` or ``eval_limit=100``."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such study file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: a folder, not a study file") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a study file: nested too deeply to read") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a study file is a mapping (name, out, datasets, grid, ...)")
        for item in overrides or []:
            _apply_override(raw, item, path)
        known = {f.name for f in dataclasses.fields(cls)} - {"base"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        for need in ("name", "out", "datasets", "grid"):
            if need not in raw:
                raise ConfigError(f"{path}: missing field '{need}'")
        try:
            return cls(**raw, base=str(path.resolve().parent))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        check_fields(type(self), values)
        check_name(self.name, "name")
        if not self.datasets:
            raise ConfigError("field 'datasets': a non-empty mapping name -> folder (or {synthetic: {...}})")
        for name, spec in self.datasets.items():
            check_name(name, f"datasets (key {name!r})")  # the folder of its cells in the study folder
            if isinstance(spec, dict) and (set(spec) != {"synthetic"} or not isinstance(spec["synthetic"], (dict, type(None)))):
                raise ConfigError(f"field 'datasets.{name}': {spec!r} is neither a folder nor {{synthetic: {{...}}}}")
        self._check_grid()
        if self.split not in ("valid", "test"):
            raise ConfigError(f"field 'split': {self.split!r} (valid or test)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"field 'eval_limit': {self.eval_limit} (must be >= 1, or null for all rows)")
        for n, pair in enumerate(self.eval_sample_exclude):
            if len(pair) != 2 or min(pair) < 0:
                raise ConfigError(f"field 'eval_sample_exclude[{n}]': {pair!r} is not a [limit, seed] pair")
            check_seed(pair[1], f"field 'eval_sample_exclude[{n}][1]'")
        if self.eval_sample_seed is not None:
            check_seed(self.eval_sample_seed, "field 'eval_sample_seed'")
        if self.eval_sample_exclude and self.eval_sample_seed is None:
            raise ConfigError("field 'eval_sample_exclude' needs 'eval_sample_seed' (it excludes rows from a sample)")
        if not self.seeds:
            raise ConfigError("field 'seeds': give at least one seed")
        for n, seed in enumerate(self.seeds):
            check_seed(seed, f"field 'seeds[{n}]'")
        if self.eval_batch_size < 1:
            raise ConfigError(f"field 'eval_batch_size': {self.eval_batch_size} (must be >= 1)")
        if self.beams < 10:
            raise ConfigError(f"field 'beams': {self.beams} (must be >= 10: metrics go up to @10)")
        for n, b in enumerate(self.betas):
            if b != "auto":
                _check_beta(b, f"betas[{n}]", " or 'auto'")
        self._check_beta_tuning()
        self._check_train()
        self._check_fusion()

    def _check_grid(self) -> None:
        if not self.grid:
            raise ConfigError("field 'grid': a non-empty list of {host: [...], cf: [...], alpha: [...]}")
        for n, block in enumerate(self.grid):
            if not isinstance(block, dict) or set(block) - set(GRID_KEYS) or "host" not in block:
                raise ConfigError(f"field 'grid[{n}]': {block!r} (expected keys host, cf, alpha)")
            for key, values in block.items():
                if isinstance(values, list) and not values:  # a grid of no cells: refused, not run as nothing
                    raise ConfigError(f"field 'grid[{n}].{key}': an empty list (give at least one value"
                                      f"{'; leave cf out for no CF model' if key == 'cf' else ''})")
            for host in as_list(block["host"]):
                if check_name(host, f"grid[{n}].host") not in HOSTS:
                    raise ConfigError(f"field 'grid[{n}].host': unknown host {host!r} (choose from {', '.join(HOSTS)})")
            for cf in as_list(block.get("cf", [])):
                check_name(cf, f"grid[{n}].cf")
            for a in as_list(block.get("alpha", [0.0])):
                check_value(a, float, f"grid[{n}].alpha")
                if not 0 <= a <= 1:
                    raise ConfigError(f"field 'grid[{n}].alpha': {a!r} is not in [0, 1]")

    def _check_beta_tuning(self) -> None:
        if set(self.beta_tuning) - {"rows", "grid"}:
            raise ConfigError(f"field 'beta_tuning': {self.beta_tuning!r} (known keys: rows, grid)")
        check_value(self.beta_tuning.get("rows", 1), int, "beta_tuning.rows")
        check_value(self.beta_tuning.get("grid", []), list[float], "beta_tuning.grid")
        if self.beta_tuning.get("rows", 1) < 1:
            raise ConfigError(f"field 'beta_tuning.rows': {self.beta_tuning['rows']} (must be >= 1)")
        for n, b in enumerate(self.beta_tuning.get("grid", [])):
            _check_beta(b, f"beta_tuning.grid[{n}]")

    def _check_fusion(self) -> None:
        if self.fusion is None:
            return
        known = {f.name for f in dataclasses.fields(FusionConfig)} - {"beams"}
        if set(self.fusion) - known:
            raise ConfigError(f"field 'fusion': unknown option(s) {', '.join(sorted(set(self.fusion) - known))} "
                              f"(known: {', '.join(sorted(known))})")
        check_fields(FusionConfig, self.fusion, "fusion")
        try:
            self.fusion_config()
        except ConfigError as e:
            raise ConfigError(f"field 'fusion': {str(e).removeprefix('--')}") from None
        if not self.cf_cells():
            raise ConfigError("field 'fusion': the learned fusion needs a CF model in the grid ('cf')")

    def fusion_config(self) -> FusionConfig | None:
        """The learned fusion each LLM cell is fit with (on the study's beams), or None."""
        return None if self.fusion is None else FusionConfig(**self.fusion, beams=self.beams)

    def _check_train(self) -> None:
        fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(CELL_FIELDS)
        bad = set(self.train) - fields
        if bad:
            raise ConfigError(f"field 'train': unknown option(s) {', '.join(sorted(bad))}")
        check_fields(TrainConfig, self.train, "train")
        try:  # the ranges, as one cell would be configured
            TrainConfig(data=".", out=".", host="tallrec", **self.train)
        except ConfigError as e:
            raise ConfigError(f"field 'train': {e}") from None

    # ---- the grid ----------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return (Path(self.base) / self.out).resolve()

    @property
    def sample_exclude(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(n), int(seed)) for n, seed in self.eval_sample_exclude)

    def llm_cells(self) -> list[LLMCell]:
        cells: dict[LLMCell, None] = {}
        for dataset, block, seed in itertools.product(self.datasets, self.grid, self.seeds):
            cfs = as_list(block.get("cf", [])) or [None]
            for host, cf, alpha in itertools.product(as_list(block["host"]), cfs, as_list(block.get("alpha", [0.0]))):
                uses_cf = alpha > 0 or host == "llara"
                if uses_cf and cf is None:
                    raise ConfigError(f"study grid: host {host} at alpha {alpha} needs a CF model (grid 'cf')")
                cells[LLMCell(dataset, host, cf if uses_cf else None, float(alpha), int(seed))] = None
        return list(cells)

    def cf_cells(self) -> list[CFCell]:
        models = dict.fromkeys(cf for block in self.grid for cf in as_list(block.get("cf", [])))
        return [CFCell(d, m, s) for d, m, s in itertools.product(self.datasets, models, self.seeds)]


def _check_beta(value: object, field: str, also: str = "") -> None:
    """The CF weights' one rule (``tca4rec.llm.config.check_beta``), named as a field of the file."""
    try:
        check_beta(value)
    except ConfigError as e:
        raise ConfigError(f"field '{field}': {e}{also}") from None


def _apply_override(raw: dict, item: str, path: Path) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. train.max_minutes=4)")
    *parents, leaf = key.split(".")
    target = raw
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {item!r}: {part} is not a mapping in {path}")
    try:
        target[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"--set {key}=...: value nested too deeply to read") from None


DEMO_SYNTH = {"num_items": 400, "num_users": 600, "seed": 0}
DEMO_BETA_GRID = [0, 2, 8, 32]  # CF weights the demo tries on valid rows (wide: the best sat at 8-32 at demo size)


@dataclass
class DemoConfig:
    """The demo's sample sizes: chosen so `make demo` fits 20 minutes on a 2-core CPU with margin."""

    data: str | None = None  # None: the embedded synthetic dataset
    out: str = "demo_out"
    llm: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    train_limit: int = 160  # training rows for the LLM (SASRec uses all train rows)
    max_steps: int = 40  # optimizer steps per LLM run (one pass over train_limit rows)
    batch_size: int = 4
    lr: float = 5e-4
    test_limit: int = 40  # test rows, the same for every method
    cf_epochs: int = 30
    seed: int = 0
    guided: bool = True  # also CF-guided decoding of both LLM runs (the fused rows), beta tuned on valid rows
    beta_rows: int = 16  # valid rows decoded per beta of DEMO_BETA_GRID when guided

    def study_config(self) -> StudyConfig:
        name = "synthetic" if self.data is None else Path(self.data).resolve().name
        dataset = {"synthetic": DEMO_SYNTH} if self.data is None else str(Path(self.data).resolve())
        train = {"train_limit": self.train_limit, "max_steps": self.max_steps, "batch_size": self.batch_size,
                 "grad_accum": 1, "lr": self.lr, "eval_rows": 0, "save_steps": max(self.max_steps // 2, 1),
                 "logging_steps": max(self.max_steps // 20, 1)}
        if self.llm is not None:
            train["llm"] = str(Path(self.llm).resolve())
        return StudyConfig(
            name="demo", out=str(Path(self.out).resolve()), datasets={name: dataset},
            grid=[{"host": ["tallrec"], "cf": ["sasrec"], "alpha": [0.0, 0.1]}],
            split="test", eval_limit=self.test_limit, seeds=[self.seed], cf={"epochs": self.cf_epochs},
            train=train, betas=[0, "auto"] if self.guided else [0], cf_lookahead="max",
            beta_tuning={"rows": self.beta_rows, "grid": DEMO_BETA_GRID} if self.guided else {},
            labels={f"{name}/cf/sasrec-s{self.seed}": "SASRec",
                    f"{name}/llm/tallrec-nocf-a0-s{self.seed}": "LLM",
                    f"{name}/llm/tallrec-sasrec-a0.1-s{self.seed}": "LLM + TCA4Rec"})

"""Studies: a grid of datasets x hosts x CF models x alpha x seeds, run and reported as one.

A study is described by a YAML file (see ``docs/results/*.yaml``)::

    name: toys-small
    out: runs/toys-small            # relative to the YAML file
    datasets: {Toys_and_Games: ../../../shared/data/amazon2018/Toys_and_Games}
    split: test
    eval_limit: 200                  # test rows (the same rows for every method)
    eval_sample_seed: 0              # optional: a seeded random sample of the split, not its first rows
    seeds: [0]
    cf: {epochs: 50}                 # CF training options (CFConfig fields; train_limit: the first N train rows)
    train: {train_limit: 1000, max_steps: 200, batch_size: 4, grad_accum: 1}  # TrainConfig fields
    grid:
      - {host: [tallrec], cf: [sasrec], alpha: [0, 0.1]}

Each cell is an ordinary run folder (``out/<dataset>/cf/<model>-s<seed>``,
``out/<dataset>/llm/<host>-<cf>-a<alpha>-s<seed>``), so any cell can be inspected,
evaluated or used for ``recommend`` on its own. The runner is resumable: an evaluated
cell is skipped, a cell killed during training restarts from its last checkpoint. The
host alone (alpha = 0, no CF embeddings) does not depend on the CF model, so it is trained
once and shared by every CF series of the same host.

``tca4rec demo`` is a study too: one synthetic dataset, SASRec, tallrec at alpha 0 and 0.1.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from tca4rec.align.guidance import CF_LOOKAHEADS
from tca4rec.errors import ConfigError, TCA4RecError
from tca4rec.study_cells import CFCell, LLMCell
from tca4rec.study_cells import as_list as _as_list

# Rough costs on a 2-core CPU with SmolLM2-135M, refined from measured runs as the study goes.
STAGES = ("all", "train", "evaluate")
INITIAL_RATES = {"llm_step": 4.0, "eval_row": 2.0, "cf_run": 60.0}
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
    eval_sample_exclude: list = field(default_factory=list)  # [limit, seed] of earlier samples whose rows are left out
    seeds: list[int] = field(default_factory=lambda: [0])
    beams: int = 10
    eval_batch_size: int = 8  # test rows decoded per model call (x beams sequences); raise it on a GPU
    betas: list = field(default_factory=lambda: [0])  # CF-guided decoding weights per LLM cell; "auto": tuned
    beta_tuning: dict = field(default_factory=dict)  # for "auto": {rows: 100, grid: [0, 0.25, ...]} on valid rows
    cf_lookahead: str = "sum"  # CF-guided decoding: a partial title's CF part, its prefix's share or best title (max)
    cf: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    base: str = "."
    labels: dict[str, str] = field(default_factory=dict)  # optional display names by cell folder

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "StudyConfig":
        """Read a study file; ``overrides`` (``key=value`` or ``train.key=value``, values in YAML)
        replace its fields, e.g. ``train.max_minutes=4`` or ``eval_limit=100``."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such study file") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a study file is a mapping (name, out, datasets, grid, ...)")
        for item in overrides or []:
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
        known = {f.name for f in dataclasses.fields(cls)} - {"base"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        for need in ("name", "out", "datasets", "grid"):
            if need not in raw:
                raise ConfigError(f"{path}: missing field '{need}'")
        return cls(**raw, base=str(path.resolve().parent))

    def __post_init__(self) -> None:
        from tca4rec.cf import CF_MODELS
        from tca4rec.llm.config import HOSTS, TrainConfig

        if not isinstance(self.datasets, dict) or not self.datasets:
            raise ConfigError("study field 'datasets': a non-empty mapping name -> folder (or {synthetic: {...}})")
        if not isinstance(self.grid, list) or not self.grid:
            raise ConfigError("study field 'grid': a non-empty list of {host: [...], cf: [...], alpha: [...]}")
        for n, block in enumerate(self.grid):
            if not isinstance(block, dict) or set(block) - {"host", "cf", "alpha"} or "host" not in block:
                raise ConfigError(f"study field 'grid[{n}]': expected keys host, cf, alpha")
            for host in _as_list(block["host"]):
                if host not in HOSTS:
                    raise ConfigError(f"study field 'grid[{n}].host': unknown host {host!r} (choose from {', '.join(HOSTS)})")
            for cf in _as_list(block.get("cf", [])):
                if cf not in CF_MODELS:
                    raise ConfigError(f"study field 'grid[{n}].cf': unknown CF model {cf!r} (known: {', '.join(CF_MODELS)})")
            for a in _as_list(block.get("alpha", [0.0])):
                if not isinstance(a, (int, float)) or not 0 <= a <= 1:
                    raise ConfigError(f"study field 'grid[{n}].alpha': {a!r} is not in [0, 1]")
        if self.split not in ("valid", "test"):
            raise ConfigError(f"study field 'split': {self.split!r} (valid or test)")
        if not isinstance(self.eval_sample_exclude, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and v >= 0 for v in p)
                for p in self.eval_sample_exclude):
            raise ConfigError(f"study field 'eval_sample_exclude': {self.eval_sample_exclude!r} is not a list of "
                              "[limit, seed] pairs of integers")
        if self.eval_sample_exclude and self.eval_sample_seed is None:
            raise ConfigError("study field 'eval_sample_exclude' needs 'eval_sample_seed' (it excludes rows from a sample)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError("study field 'eval_limit': must be >= 1 (or null for all rows)")
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise ConfigError("study field 'eval_batch_size': must be an integer >= 1")
        if self.beams < 10:
            raise ConfigError("study field 'beams': must be >= 10 (metrics go up to @10)")
        for b in _as_list(self.betas):
            if b != "auto" and not (isinstance(b, (int, float)) and b >= 0):
                raise ConfigError(f"study field 'betas': {b!r} is not a number >= 0 or 'auto'")
        if set(self.beta_tuning) - {"rows", "grid"}:
            raise ConfigError("study field 'beta_tuning': known keys are rows and grid")
        if self.cf_lookahead not in CF_LOOKAHEADS:
            raise ConfigError(f"study field 'cf_lookahead': {self.cf_lookahead!r} (sum or max)")
        fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "out", "host", "cf", "alpha", "seed"}
        bad = set(self.train) - fields
        if bad:
            raise ConfigError(f"study field 'train': unknown option(s) {', '.join(sorted(bad))}")

    # ---- the grid ----------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return (Path(self.base) / self.out).resolve()

    def llm_cells(self) -> list[LLMCell]:
        cells: dict[LLMCell, None] = {}
        for dataset, block, seed in itertools.product(self.datasets, self.grid, self.seeds):
            cfs = _as_list(block.get("cf", [])) or [None]
            for host, cf, alpha in itertools.product(_as_list(block["host"]), cfs, _as_list(block.get("alpha", [0.0]))):
                uses_cf = alpha > 0 or host == "llara"
                if uses_cf and cf is None:
                    raise ConfigError(f"study grid: host {host} at alpha {alpha} needs a CF model (grid 'cf')")
                cells[LLMCell(dataset, host, cf if uses_cf else None, float(alpha), int(seed))] = None
        return list(cells)

    def cf_cells(self) -> list[CFCell]:
        models = dict.fromkeys(cf for block in self.grid for cf in _as_list(block.get("cf", [])))
        return [CFCell(d, m, s) for d, m, s in itertools.product(self.datasets, models, self.seeds)]


# ---- running -----------------------------------------------------------------------------
@dataclass
class Stage:
    """One step of a study: ``units`` of ``kind`` work (a CF run, LLM steps, test rows) on ``dataset``."""

    what: str
    kind: str  # a key of INITIAL_RATES
    dataset: str
    units: int
    run: Callable[[], None]


class Study:
    """Runs (or resumes) every cell of a ``StudyConfig``, then writes the aggregate report."""

    def __init__(self, config: StudyConfig, log=print) -> None:
        self.config = config
        self.out = config.out_dir
        self.log = log
        self.rates: dict[str | tuple[str, str], float] = dict(INITIAL_RATES)  # per kind, and per (kind, dataset)
        self._datasets: dict = {}

    def dataset_dir(self, name: str) -> Path:
        spec = self.config.datasets[name]
        if isinstance(spec, dict) and "synthetic" in spec:
            return self.out / name / "data"
        return (Path(self.config.base) / str(spec)).resolve()

    def dataset(self, name: str):
        if name not in self._datasets:
            from tca4rec.data import load_dataset

            spec = self.config.datasets[name]
            path = self.dataset_dir(name)
            if isinstance(spec, dict) and "synthetic" in spec and not (path / "item.csv").is_file():
                from tca4rec.data.synth import SynthConfig, write_synthetic_dataset

                self.log(f"generating the synthetic dataset {name} -> {path}")
                write_synthetic_dataset(path, SynthConfig(**(spec["synthetic"] or {})))
            self._datasets[name] = load_dataset(path)
        return self._datasets[name]

    @property
    def sample_exclude(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(n), int(seed)) for n, seed in self.config.eval_sample_exclude)

    def _eval_rows(self, name: str) -> int:
        return len(self.dataset(name).split(self.config.split).select(
            self.config.eval_limit, self.config.eval_sample_seed, self.sample_exclude))

    def _train_steps(self, name: str) -> int:
        t = self.config.train
        if t.get("max_steps"):
            return int(t["max_steps"])
        rows = len(self.dataset(name).split("train"))
        if t.get("train_limit"):
            rows = min(rows, int(t["train_limit"]))
        per_step = int(t.get("batch_size", 4)) * int(t.get("grad_accum", 4))
        return int(np.ceil(rows / per_step) * float(t.get("epochs", 10)))

    def plan(self, only: list[str] | None = None, stage: str = "all") -> list[Stage]:
        """The stages left to run, in order (``only``: just the cells with these folders).

        ``stage``: ``all``; ``train`` (CF cells and LLM fine-tuning, no LLM decoding) or
        ``evaluate`` (CF cells and decoding of the fine-tuned LLM cells), e.g. to train and
        evaluate in separate capped calls or on separate machines.
        """
        if stage not in STAGES:
            raise ConfigError(f"--stage {stage}: choose from {', '.join(STAGES)}")
        if only is not None:
            known = {c.folder for c in [*self.config.cf_cells(), *self.config.llm_cells()]}
            unknown = sorted(set(only) - known)
            if unknown:
                raise ConfigError(f"--only {', '.join(unknown)}: not a cell of this study "
                                  f"(cells: {', '.join(sorted(known))})")
        stages: list[Stage] = []
        # Per LLM cell: is its plain decoding evaluated, and which CF-guided decodings are left.
        progress = {c: (self.evaluated(self.out / c.folder, c.dataset), self._guided_left(c))
                    for c in self.config.llm_cells()}
        unfinished = [c for c, (plain_done, guided_left) in progress.items() if not plain_done or guided_left]
        for cell in self.config.cf_cells():
            if only is not None and cell.folder not in only:
                continue
            run = self.out / cell.folder
            # A finished study folder may be kept without its weights (e.g. committed as results):
            # the CF model is trained again only if an unfinished LLM cell still reads it.
            readers = [c for c in unfinished if (c.cf is not None and CFCell(c.dataset, c.cf, c.seed) == cell)
                       or (self.guided_betas() and self.guide_cf_run(c) == run)]
            weights_needed = bool(readers) and not (run / "model.safetensors").is_file()
            if not self.evaluated(run, cell.dataset) or weights_needed:
                stages.append(Stage(f"CF {cell.label} on {cell.dataset}", "cf_run", cell.dataset, 1,
                                    lambda c=cell: self.run_cf(c)))
        for cell in self.config.llm_cells():
            run = self.out / cell.folder
            if only is not None and cell.folder not in only:
                continue
            plain_done, guided_left = progress[cell]
            trained = (run / "adapter").is_dir()
            if not trained and cell in unfinished and stage != "evaluate":  # a finished cell may lack its adapter
                stages.append(Stage(f"fine-tune {cell.label} on {cell.dataset}", "llm_step", cell.dataset,
                                    self._train_steps(cell.dataset), lambda c=cell: self.train_llm(c)))
            if stage == "all" or (stage == "evaluate" and trained):
                if not plain_done:
                    stages.append(Stage(f"evaluate {cell.label} on {cell.dataset}", "eval_row", cell.dataset,
                                        self._eval_rows(cell.dataset), lambda c=cell: self.evaluate_llm(c)))
                for b in guided_left:
                    stages.append(Stage(f"evaluate {cell.label} on {cell.dataset} with CF-guided decoding (β={b})",
                                        "eval_row", cell.dataset, self._eval_rows(cell.dataset),
                                        lambda c=cell, b=b: self.evaluate_llm(c, b)))
        return stages

    def _guided_left(self, cell: LLMCell) -> list:
        """The CF-guided decodings (betas) of ``cell`` not evaluated yet."""
        run = self.out / cell.folder
        return [b for b in self.guided_betas() if self.guided_beta_value(cell, b) is None
                or not self.evaluated(run, cell.dataset, self.guided_beta_value(cell, b))]

    # ---- CF-guided decoding: every LLM cell is also decoded with each beta of ``betas`` ----
    def guided_betas(self) -> list:
        return [b for b in _as_list(self.config.betas) if b != 0]

    def guide_cf_run(self, cell: LLMCell) -> Path:
        """The CF run whose logits guide a cell's decoding: its teacher, or the dataset's first CF model."""
        model = cell.cf or next((c.model for c in self.config.cf_cells() if c.dataset == cell.dataset), None)
        if model is None:
            raise ConfigError(f"study field 'betas': CF-guided decoding of {cell.label} needs a CF model in the grid")
        return self.out / CFCell(cell.dataset, model, cell.seed).folder

    def guided_beta_value(self, cell: LLMCell, beta) -> float | None:
        """The number ``beta`` stands for (``auto``: the tuned one; None until tuned with this CF run)."""
        if beta != "auto":
            return float(beta)
        from tca4rec.llm.decoding import read_tuned_beta

        try:
            return read_tuned_beta(self.out / cell.folder, self.guide_cf_run(cell), self.config.cf_lookahead)
        except TCA4RecError:
            return None

    def evaluated(self, run: Path, dataset: str, beta: float = 0.0) -> bool:
        """Whether ``run`` holds metrics for this study's split, rows and beams (decoded with CF
        weight ``beta``). Metrics from another ``eval_limit`` or beam width (a study folder
        re-run with a changed config) would compare methods on different rows: such a cell is
        evaluated again."""
        from tca4rec.evaluate.llm_eval import decoding_suffix

        path = run / f"metrics_{self.config.split}{decoding_suffix(beta, False, self.config.cf_lookahead)}.json"
        if not path.is_file():
            return False
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return False  # unreadable: evaluating again rewrites it atomically
        same_beams = record.get("beams", self.config.beams) == self.config.beams  # CF records have none
        return (record.get("rows") == self._eval_rows(dataset) and same_beams
                and record.get("sample_seed") == self.config.eval_sample_seed
                and record.get("sample_exclude", []) == [list(p) for p in self.sample_exclude])

    def estimate(self, stage: Stage) -> float:
        """Seconds ``stage`` should take: its units at the rate measured on the same dataset,
        else on any dataset (the latest), else a prior for this 2-core CPU."""
        rate = self.rates.get((stage.kind, stage.dataset), self.rates[stage.kind])
        return stage.units * rate

    def _measured(self, kind: str, dataset: str, seconds: float, units: int) -> None:
        self.rates[kind] = self.rates[(kind, dataset)] = seconds / max(units, 1)

    def run(self, jobs: int = 1, only: list[str] | None = None, finish_within: float | None = None,
            eval_reserve: float = 120.0, stage: str = "all") -> Path | None:
        """Run every stage left (``only``: just the cells with these folders, and no report).

        ``jobs > 1`` fine-tunes and evaluates that many LLM cells at once, each in its own
        ``tca4rec study CONFIG --only CELL`` process (log in ``logs/``), after the CF cells
        they read. On a GPU too small a model to fill it this multiplies throughput; with
        several GPUs, job i gets GPU i mod count. ``stage``: see ``plan``. Returns the report
        folder (None with ``only`` or ``stage="train"``).

        ``finish_within`` (seconds from now; needs every LLM cell running at once) gives each
        LLM cell the same budget, ``train.max_minutes``: what is left once the CF cells are done,
        less ``eval_reserve`` seconds (loading, the report); training also keeps back the time
        its test rows will take to decode, at the rate its valid evaluations measured.
        """
        from tca4rec.io import atomic_write_text

        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: must be >= 1")
        deadline = None if finish_within is None else time.time() + finish_within
        if deadline is not None and jobs < len(self.config.llm_cells()):
            raise ConfigError(f"--finish-within needs every LLM cell running at once: --jobs {jobs} < "
                              f"{len(self.config.llm_cells())} cells")
        self.out.mkdir(parents=True, exist_ok=True)
        if only is None:
            atomic_write_text(self.out / "study.yaml", yaml.safe_dump(_config_record(self.config), sort_keys=False))
        for name in self.config.datasets:
            self.dataset(name)
        stages = self.plan(only, stage)
        if jobs > 1:
            stages = [s for s in stages if s.kind == "cf_run"]
        started = time.time()
        for n, step in enumerate(stages, 1):
            left = sum(self.estimate(s) for s in stages[n - 1:])  # re-estimated with the rates measured so far
            self.log(f"[{n}/{len(stages)}] {step.what}  (about {_fmt(left)} left for the whole run)")
            t0 = time.time()
            step.run()
            self.log(f"[{n}/{len(stages)}] done in {_fmt(time.time() - t0)}")
        if jobs > 1:
            self._run_llm_cells_in_parallel(jobs, deadline, eval_reserve, stage)
        if stages or jobs > 1:
            self.log(f"all stages done in {_fmt(time.time() - started)}")
        return None if only is not None or stage == "train" else self.report()

    def _run_llm_cells_in_parallel(self, jobs: int, deadline: float | None, eval_reserve: float, stage: str) -> None:
        import os
        import subprocess
        import sys

        import torch

        todo = [c for c in self.config.llm_cells() if self.plan([c.folder], stage)]
        if not todo:
            return
        config_path = self.out / "study.yaml"
        if not config_path.is_file():
            raise ConfigError(f"{config_path} is missing: run the study without --only first")
        extra: list[str] = []
        if deadline is not None and stage != "evaluate":
            minutes = (deadline - time.time() - eval_reserve) / 60
            if minutes < 0.5:
                raise ConfigError(f"--finish-within: only {minutes:.1f} min left for training after the CF cells")
            rows = 0 if stage == "train" else max(self._eval_rows(c.dataset) for c in todo)
            extra = ["--set", f"train.max_minutes={minutes:.2f}", "--set", f"train.budget_eval_rows={rows}"]
            self.log(f"each LLM cell trains for at most {minutes:.2f} min (train.max_minutes), less the time "
                     f"its {rows} test rows take at the rate its valid evaluations measure")
        gpus = torch.cuda.device_count()
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        running: list[tuple[LLMCell, subprocess.Popen, float, object]] = []
        failed: list[str] = []
        queue = list(todo)
        self.log(f"{len(todo)} LLM cells, {jobs} at a time" + (f" on {gpus} GPU(s)" if gpus else ""))
        slot = 0
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop(0)
                env = dict(os.environ)
                if gpus > 1:
                    env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
                slot += 1
                log = open(logs / (cell.folder.replace("/", "__") + ".log"), "w")
                cmd = [sys.executable, "-m", "tca4rec.cli", "study", str(config_path), "--only", cell.folder, "--stage", stage, *extra]
                running.append((cell, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                                time.time(), log))
                self.log(f"started {cell.label} on {cell.dataset} (log: {_rel_log(log.name, self.out)})")
            time.sleep(1.0)
            for entry in list(running):
                cell, proc, t0, log = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                log.close()
                if proc.returncode == 0:
                    self.log(f"done {cell.label} on {cell.dataset} in {_fmt(time.time() - t0)}")
                else:
                    failed.append(f"{cell.folder} (exit {proc.returncode}, log {_rel_log(log.name, self.out)})")
                    self.log(f"FAILED {cell.label} on {cell.dataset}: see {_rel_log(log.name, self.out)}")
        if failed:
            raise TCA4RecError(f"{len(failed)} study cell(s) failed: {'; '.join(failed)}")

    def run_cf(self, cell: CFCell) -> None:
        from tca4rec.cf import evaluate_cf, train_cf

        ds = self.dataset(cell.dataset)
        run = self.out / cell.folder
        t0 = time.time()
        if not (run / "model.safetensors").is_file() or not (run / "config.json").is_file():
            opts = dict(self.config.cf)
            epochs, limit = opts.pop("epochs", None), opts.pop("train_limit", None)
            train_cf(ds, cell.model, run, config={**opts, "seed": cell.seed}, epochs=epochs, limit=limit,
                     overwrite=True)
        evaluate_cf(run, ds, split=self.config.split, limit=self.config.eval_limit,
                    sample_seed=self.config.eval_sample_seed, sample_exclude=self.sample_exclude)
        self._measured("cf_run", cell.dataset, time.time() - t0, 1)

    def train_llm(self, cell: LLMCell) -> None:
        from tca4rec.llm.config import TrainConfig
        from tca4rec.llm.train import latest_checkpoint, train

        run = self.out / cell.folder
        cf_run = str(self.out / CFCell(cell.dataset, cell.cf, cell.seed).folder) if cell.cf else None
        config = TrainConfig(data=str(self.dataset_dir(cell.dataset)), out=str(run), host=cell.host, cf=cf_run,
                             alpha=cell.alpha, seed=cell.seed, **self.config.train)
        resume = run.is_dir() and latest_checkpoint(run) is not None
        t0 = time.time()
        train(config, resume=resume, overwrite=not resume)
        if not resume:  # a resumed run does only part of the steps
            self._measured("llm_step", cell.dataset, time.time() - t0, self._train_steps(cell.dataset))

    def evaluate_llm(self, cell: LLMCell, beta=0) -> None:
        """Decode the cell's test rows (with CF weight ``beta``; ``auto`` tunes it on valid rows first)."""
        from tca4rec.evaluate.llm_eval import evaluate_llm_run

        t0 = time.time()
        run, cf_run = self.out / cell.folder, (self.guide_cf_run(cell) if beta != 0 else None)
        if beta == "auto" and self.guided_beta_value(cell, beta) is None:
            from tca4rec.evaluate.tune_beta import DEFAULT_GRID, tune_beta

            tuning = self.config.beta_tuning
            record = tune_beta(run, rows=int(tuning.get("rows", 100)), grid=tuning.get("grid", DEFAULT_GRID),
                               cf_run=cf_run, beams=self.config.beams, batch_size=self.config.eval_batch_size,
                               cf_lookahead=self.config.cf_lookahead)
            self.log(f"beta for {cell.label}: {record['best_beta']:g} (best valid {record['metric']} "
                     f"over {record['rows']} valid rows)")
        evaluate_llm_run(run, split=self.config.split, limit=self.config.eval_limit, beams=self.config.beams,
                         batch_size=self.config.eval_batch_size, beta=beta, cf_run=cf_run,
                         sample_seed=self.config.eval_sample_seed, sample_exclude=self.sample_exclude,
                         cf_lookahead=self.config.cf_lookahead)
        self._measured("eval_row", cell.dataset, time.time() - t0, self._eval_rows(cell.dataset))

    # ---- reporting ---------------------------------------------------------------------
    def report(self) -> Path:
        from tca4rec.study_report import write_study_report

        return write_study_report(self)


def _config_record(config: StudyConfig) -> dict:
    """The config as saved in the study folder: paths relative to that folder, so it moves with it."""
    import os

    rec = dataclasses.asdict(config)
    rec.pop("base")
    if not rec["eval_sample_exclude"]:  # records of studies that exclude nothing stay as they were
        rec.pop("eval_sample_exclude")
    if rec["cf_lookahead"] == "sum":  # likewise for studies with the original lookahead
        rec.pop("cf_lookahead")
    rec["datasets"] = {k: (v if isinstance(v, dict) else os.path.relpath(Path(config.base) / str(v), config.out_dir))
                       for k, v in config.datasets.items()}
    rec["out"] = "."
    return rec


def _rel_log(path: str, root: Path) -> str:
    return str(Path(path).relative_to(root))


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """A study from its YAML file, or from a study output folder (its saved ``study.yaml``);
    ``overrides``: see ``StudyConfig.from_yaml``."""
    path = Path(path)
    if path.is_dir():
        if not (path / "study.yaml").is_file():
            raise ConfigError(f"{path}: not a study folder (no study.yaml)")
        path = path / "study.yaml"
    try:
        return Study(StudyConfig.from_yaml(path, overrides))
    except TCA4RecError:
        raise
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None

"""Studies: a grid of datasets x hosts x CF models x alpha x seeds, run and reported as one.

A study is described by a YAML file, validated by ``StudyConfig`` (``study/config.py``).

Each cell is an ordinary run folder (``out/<dataset>/cf/<model>-s<seed>``,
``out/<dataset>/llm/<host>-<cf>-a<alpha>-s<seed>``), so any cell can be inspected,
evaluated or used for ``recommend`` on its own. The runner is resumable: an evaluated
cell is skipped, a cell killed during training restarts from its last checkpoint. The
host alone (alpha = 0, no CF embeddings) does not depend on the CF model, so it is trained
once and shared by every CF series of the same host. With a ``fusion`` option every LLM cell
also gets a learned fusion, fit on its valid rows (a fit with the same settings and CF model
is reused), that re-ranks its decoded test rows.

``tca4rec demo`` is a study too: one synthetic dataset, SASRec, tallrec at alpha 0 and 0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from tca4rec.align.guidance import check_lookahead
from tca4rec.cf import CF_MODELS, evaluate_cf, train_cf
from tca4rec.cf.base import CFConfig
from tca4rec.cf.run import CF_RUN_FILES
from tca4rec.cf.train import make_config
from tca4rec.data import load_dataset
from tca4rec.data.synth import SynthConfig, write_synthetic_dataset
from tca4rec.errors import ConfigError, DatasetError, TCA4RecError
from tca4rec.fuse.apply import fuse_predictions, fused_with
from tca4rec.fuse.config import FUSION_SUFFIX
from tca4rec.fuse.fit import fit_fusion
from tca4rec.fuse.store import fusion_matches
from tca4rec.io import atomic_write_text, exclusive_use, remove_own_folder
from tca4rec.llm.config import TrainConfig
from tca4rec.llm.decoding import read_tuned_beta
from tca4rec.llm.evaluate import decoding_suffix, evaluate_llm_run
from tca4rec.llm.run import LLM_RUN_FILES
from tca4rec.llm.train import latest_checkpoint, train
from tca4rec.llm.tune_beta import DEFAULT_GRID, tune_beta
from tca4rec.study.cells import CFCell, LLMCell
from tca4rec.study.cells import as_list as _as_list
from tca4rec.study.config import StudyConfig
from tca4rec.study.report import write_study_report
from tca4rec.validate import check_fields, check_value, loads_json

# Rough costs on a 2-core CPU with SmolLM2-135M, refined from measured runs as the study goes.
STAGES = ("all", "train", "evaluate")
INITIAL_RATES = {"llm_step": 4.0, "eval_row": 2.0, "cf_run": 60.0}
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
        _check_against_registries(config)
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
            spec = self.config.datasets[name]
            path = self.dataset_dir(name)
            if isinstance(spec, dict) and "synthetic" in spec and not (path / "item.csv").is_file():
                self.log(f"generating the synthetic dataset {name} -> {path}")
                write_synthetic_dataset(path, SynthConfig(**(spec["synthetic"] or {})))
            self._datasets[name] = load_dataset(path)
        return self._datasets[name]

    def _load_given_datasets(self) -> None:
        """Load every dataset the study file names a folder for, before anything is created: a
        missing or bad one is refused naming its field, not found after the study folder exists."""
        for name, spec in self.config.datasets.items():
            if not isinstance(spec, dict):
                try:
                    self.dataset(name)
                except DatasetError as e:
                    raise ConfigError(f"study field 'datasets.{name}': {e}") from None

    def _eval_rows(self, name: str) -> int:
        return len(self.dataset(name).split(self.config.split).select(
            self.config.eval_limit, self.config.eval_sample_seed, self.config.sample_exclude))

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
        # Per LLM cell: is its plain decoding evaluated, which CF-guided decodings are left, is its fusion.
        progress = {c: (self.evaluated(self.out / c.folder, c.dataset), self._guided_left(c), self._fusion_left(c))
                    for c in self.config.llm_cells()}
        unfinished = [c for c, (plain_done, guided_left, fusion_left) in progress.items()
                      if not plain_done or guided_left or fusion_left]
        guided = bool(self.guided_betas()) or self.config.fusion is not None  # the cells read their guide CF run
        for cell in self.config.cf_cells():
            if only is not None and cell.folder not in only:
                continue
            run = self.out / cell.folder
            # A finished study folder may be kept without its weights (e.g. committed as results):
            # the CF model is trained again only if an unfinished LLM cell still reads it.
            readers = [c for c in unfinished if (c.cf is not None and CFCell(c.dataset, c.cf, c.seed) == cell)
                       or (guided and self.guide_cf_run(c) == run)]
            weights_needed = bool(readers) and not (run / "model.safetensors").is_file()
            if not self.evaluated(run, cell.dataset) or weights_needed:
                stages.append(Stage(f"CF {cell.label} on {cell.dataset}", "cf_run", cell.dataset, 1,
                                    lambda c=cell: self.run_cf(c)))
        for cell in self.config.llm_cells():
            run = self.out / cell.folder
            if only is not None and cell.folder not in only:
                continue
            plain_done, guided_left, fusion_left = progress[cell]
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
                if fusion_left:
                    stages.append(Stage(f"learned fusion of {cell.label} on {cell.dataset} (fit on valid rows, "
                                        f"then its {self.config.split} rows re-ranked)", "eval_row", cell.dataset,
                                        self.config.fusion_config().rows, lambda c=cell: self.fuse_llm(c)))
        return stages

    def _guided_left(self, cell: LLMCell) -> list:
        """The CF-guided decodings (betas) of ``cell`` not evaluated yet."""
        run = self.out / cell.folder
        return [b for b in self.guided_betas() if self.guided_beta_value(cell, b) is None
                or not self.evaluated(run, cell.dataset, self.guided_beta_value(cell, b))]

    def _fusion_left(self, cell: LLMCell) -> bool:
        """Whether the cell's learned fusion (if the study has one) is still to fit or to apply."""
        config = self.config.fusion_config()
        if config is None:
            return False
        run = self.out / cell.folder
        return not (fused_with(run, self.config.split, self.guide_cf_run(cell), config)
                    and self.evaluated(run, cell.dataset, suffix=FUSION_SUFFIX))

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

        try:
            return read_tuned_beta(self.out / cell.folder, self.guide_cf_run(cell), self.config.cf_lookahead)
        except TCA4RecError:
            return None

    def evaluated(self, run: Path, dataset: str, beta: float = 0.0, suffix: str | None = None) -> bool:
        """Whether ``run`` holds metrics for this study's split, rows and beams (decoded with CF
        weight ``beta``, or the variant of file suffix ``suffix``). Metrics from another
        ``eval_limit`` or beam width (a study folder re-run with a changed config) would compare
        methods on different rows: such a cell is evaluated again."""
        if suffix is None:
            suffix = decoding_suffix(beta, False, self.config.cf_lookahead)
        path = run / f"metrics_{self.config.split}{suffix}.json"
        if not path.is_file():
            return False
        try:
            record = loads_json(path.read_text())
        except (OSError, ValueError):
            return False  # unreadable: evaluating again rewrites it atomically
        same_beams = record.get("beams", self.config.beams) == self.config.beams  # CF records have none
        return (record.get("rows") == self._eval_rows(dataset) and same_beams
                and record.get("sample_seed") == self.config.eval_sample_seed
                and record.get("sample_exclude", []) == [list(p) for p in self.config.sample_exclude])

    def estimate(self, stage: Stage) -> float:
        """Seconds ``stage`` should take: its units at the rate measured on the same dataset,
        else on any dataset (the latest), else a prior for this 2-core CPU."""
        rate = self.rates.get((stage.kind, stage.dataset), self.rates[stage.kind])
        return stage.units * rate

    def _measured(self, kind: str, dataset: str, seconds: float, units: int) -> None:
        self.rates[kind] = self.rates[(kind, dataset)] = seconds / max(units, 1)

    def run(self, jobs: int = 1, only: list[str] | None = None, finish_within: float | None = None,
            eval_reserve: float = 120.0, stage: str = "all", rerun_changed: bool = False) -> Path | None:
        """Run every stage left (``only``: just the cells with these folders, and no report).

        ``jobs > 1`` fine-tunes and evaluates that many LLM cells at once, each in its own
        ``tca4rec study CONFIG --only CELL`` process (log in ``logs/``), after the CF cells
        they read. On a GPU too small a model to fill it this multiplies throughput; with
        several GPUs, job i gets GPU i mod count. ``stage``: see ``plan``. Returns the report
        folder (None with ``only`` or ``stage="train"``).

        Cells already in the folder that were made with other settings (``changed_cells``: a
        ``--set train.lr=...`` on a finished study) are refused, or with ``rerun_changed``
        deleted and run again, so no result is ever reported under settings it was not made with.
        A second run of the whole study while one is running is refused (``io.exclusive_use``);
        ``--only`` runs (the parallel jobs' own) are held by each cell's training and decoding.

        ``finish_within`` (seconds from now; needs every LLM cell running at once) gives each
        LLM cell the same budget, ``train.max_minutes``: what is left once the CF cells are done,
        less ``eval_reserve`` seconds (loading, the report); training also keeps back the time
        its test rows will take to decode, at the rate its valid evaluations measured.
        """
        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: must be >= 1")
        deadline = None if finish_within is None else time.time() + finish_within
        if deadline is not None and jobs < len(self.config.llm_cells()):
            raise ConfigError(f"--finish-within needs every LLM cell running at once: --jobs {jobs} < "
                              f"{len(self.config.llm_cells())} cells")
        with exclusive_use(self.out, "study") if only is None else contextlib.nullcontext():
            self._load_given_datasets()
            self._refuse_or_clear_changed(rerun_changed)
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

    def _cf_settings(self, cell: CFCell) -> tuple[CFConfig, int | None]:
        """The config and train-row limit a CF cell is trained with."""
        opts = dict(self.config.cf)
        epochs, limit = opts.pop("epochs", None), opts.pop("train_limit", None)
        config = make_config(cell.model, {**opts, "seed": cell.seed})
        return (config if epochs is None else dataclasses.replace(config, epochs=epochs)), limit

    def _train_config(self, cell: LLMCell) -> TrainConfig:
        """The TrainConfig an LLM cell is fine-tuned with."""
        cf_run = str(self.out / CFCell(cell.dataset, cell.cf, cell.seed).folder) if cell.cf else None
        return TrainConfig(data=str(self.dataset_dir(cell.dataset)), out=str(self.out / cell.folder), host=cell.host,
                           cf=cf_run, alpha=cell.alpha, seed=cell.seed, **self.config.train)

    def changed_cells(self) -> dict[str, list[str]]:
        """Cells already in the study folder that were made with other settings than this study
        asks for (folder -> what differs), and the LLM cells whose CF teacher is such a cell.
        Their results must not be reported under the new settings."""
        changed: dict[str, list[str]] = {}
        for cell in self.config.cf_cells():
            stored = _stored_config(self.out / cell.folder)
            if stored is not None:
                config, limit = self._cf_settings(cell)
                diff = _differences({**stored.get("config", {}), "train_limit": stored.get("limit")},
                                    {**dataclasses.asdict(config), "train_limit": limit})
                if diff:
                    changed[cell.folder] = diff
        for cell in self.config.llm_cells():
            stored = _stored_config(self.out / cell.folder)
            if stored is not None:
                want = dataclasses.asdict(self._train_config(cell))
                if want["lora_targets"] is None:  # the architecture's default; older runs stored the list
                    want.pop("lora_targets")
                diff = _differences(stored.get("config", {}), want, skip=NOT_RESULT_FIELDS)
                teacher = CFCell(cell.dataset, cell.cf, cell.seed).folder if cell.cf else None
                if teacher in changed:
                    diff.append(f"its CF teacher {teacher} changed")
                if diff:
                    changed[cell.folder] = diff
        return changed

    def _refuse_or_clear_changed(self, rerun_changed: bool) -> None:
        changed = self.changed_cells()
        if not changed:
            return
        listing = "; ".join(f"{folder} ({', '.join(diff)})" for folder, diff in changed.items())
        if not rerun_changed:
            raise ConfigError(f"{self.out} holds cells made with other settings than this study asks for: {listing}. "
                              "Give the new settings a new 'out', or pass --rerun-changed to train and evaluate those "
                              "cells again (their results are replaced)")
        for folder in changed:
            own = CF_RUN_FILES if "/cf/" in folder else LLM_RUN_FILES
            remove_own_folder(self.out / folder, own, "tca4rec run")
            self.log(f"settings changed: {folder} is run again")

    def run_cf(self, cell: CFCell) -> None:
        ds = self.dataset(cell.dataset)
        run = self.out / cell.folder
        t0 = time.time()
        if not (run / "model.safetensors").is_file() or not (run / "config.json").is_file():
            config, limit = self._cf_settings(cell)
            train_cf(ds, cell.model, run, config=config, limit=limit, overwrite=True)
        evaluate_cf(run, ds, split=self.config.split, limit=self.config.eval_limit,
                    sample_seed=self.config.eval_sample_seed, sample_exclude=self.config.sample_exclude)
        self._measured("cf_run", cell.dataset, time.time() - t0, 1)

    def train_llm(self, cell: LLMCell) -> None:
        run = self.out / cell.folder
        config = self._train_config(cell)
        resume = run.is_dir() and latest_checkpoint(run) is not None
        t0 = time.time()
        train(config, resume=resume, overwrite=not resume)
        if not resume:  # a resumed run does only part of the steps
            self._measured("llm_step", cell.dataset, time.time() - t0, self._train_steps(cell.dataset))

    def evaluate_llm(self, cell: LLMCell, beta=0) -> None:
        """Decode the cell's test rows (with CF weight ``beta``; ``auto`` tunes it on valid rows first)."""
        t0 = time.time()
        run, cf_run = self.out / cell.folder, (self.guide_cf_run(cell) if beta != 0 else None)
        if beta == "auto" and self.guided_beta_value(cell, beta) is None:
            tuning = self.config.beta_tuning
            record = tune_beta(run, rows=int(tuning.get("rows", 100)), grid=tuning.get("grid", DEFAULT_GRID),
                               cf_run=cf_run, beams=self.config.beams, batch_size=self.config.eval_batch_size,
                               cf_lookahead=self.config.cf_lookahead)
            self.log(f"beta for {cell.label}: {record['best_beta']:g} (best valid {record['metric']} "
                     f"over {record['rows']} valid rows)")
        evaluate_llm_run(run, split=self.config.split, limit=self.config.eval_limit, beams=self.config.beams,
                         batch_size=self.config.eval_batch_size, beta=beta, cf_run=cf_run,
                         sample_seed=self.config.eval_sample_seed, sample_exclude=self.config.sample_exclude,
                         cf_lookahead=self.config.cf_lookahead)
        self._measured("eval_row", cell.dataset, time.time() - t0, self._eval_rows(cell.dataset))

    def fuse_llm(self, cell: LLMCell) -> None:
        """Fit the cell's learned fusion on its valid rows (one fit with these settings and CF model
        is reused), then re-rank its decoded test rows with it."""
        t0 = time.time()
        run, cf_run, config = self.out / cell.folder, self.guide_cf_run(cell), self.config.fusion_config()
        fitted = not fusion_matches(run, cf_run, config)
        if fitted:
            record = fit_fusion(run, cf_run, config, batch_size=self.config.eval_batch_size)
            self.log(f"learned fusion of {cell.label}: {record['settings']} (held-out valid NDCG@10 "
                     f"{record['selection']['held_out']['fusion']:.4f})")
        fuse_predictions(run, self.config.split, cf_run=cf_run)
        if fitted:
            self._measured("eval_row", cell.dataset, time.time() - t0, config.rows)

    # ---- reporting ---------------------------------------------------------------------
    def report(self) -> Path:
        return write_study_report(self)


# TrainConfig fields that say where things are or how often to log, not what was trained (the
# CF teacher is compared as a cell of its own).
NOT_RESULT_FIELDS = {"data", "out", "cf", "logging_steps", "save_total_limit", "max_minutes", "budget_eval_rows"}


def _stored_config(run: Path) -> dict | None:
    try:
        return loads_json((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _differences(have: dict, want: dict, skip: set[str] = frozenset()) -> list[str]:
    """'name old -> new' for every setting of ``want`` that ``have`` (a cell's own config) holds
    with another value (a setting the cell does not record is one it predates: not a change)."""
    return [f"{k} {have[k]!r} -> {v!r}" for k, v in want.items() if k not in skip and k in have and have[k] != v]


def _check_against_registries(config: StudyConfig) -> None:
    """What ``StudyConfig`` cannot check without loading torch: the CF models of the grid and
    their options, the options of synthetic datasets, and the lookahead of CF-guided decoding."""
    try:
        check_lookahead(config.cf_lookahead)
    except ConfigError as e:
        raise ConfigError(f"field 'cf_lookahead': {e}") from None
    opts = dict(config.cf)  # epochs included: a cell's config is checked as it will be trained
    check_value(opts.get("epochs", 1), int, "cf.epochs")
    limit = opts.pop("train_limit", None)
    check_value(limit, int | None, "cf.train_limit")
    if limit is not None and limit < 1:
        raise ConfigError(f"field 'cf.train_limit': {limit} (must be >= 1, or null for all train rows)")
    for n, block in enumerate(config.grid):
        for model in _as_list(block.get("cf", [])):
            if model not in CF_MODELS:
                raise ConfigError(f"field 'grid[{n}].cf': unknown CF model {model!r} (known: {', '.join(CF_MODELS)})")
            config_class = CF_MODELS[model].config_class
            check_fields(config_class, opts, "cf")
            try:
                make_config(model, opts)
            except ConfigError as e:
                raise ConfigError(f"field 'cf' (options of {model}): {e}") from None
    for name, spec in config.datasets.items():
        if isinstance(spec, dict):
            values = spec["synthetic"] or {}
            unknown = set(values) - {f.name for f in dataclasses.fields(SynthConfig)}
            if unknown:
                raise ConfigError(f"field 'datasets.{name}.synthetic': unknown option(s) {', '.join(sorted(unknown))}")
            check_fields(SynthConfig, values, f"datasets.{name}.synthetic")


def _config_record(config: StudyConfig) -> dict:
    """The config as saved in the study folder: paths relative to that folder, so it moves with it."""
    rec = dataclasses.asdict(config)
    rec.pop("base")
    if not rec["eval_sample_exclude"]:  # records of studies that exclude nothing stay as they were
        rec.pop("eval_sample_exclude")
    if rec["cf_lookahead"] == "sum":  # likewise for studies with the original lookahead
        rec.pop("cf_lookahead")
    if rec["fusion"] is None:  # and for studies without a learned fusion
        rec.pop("fusion")
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
    config = StudyConfig.from_yaml(path, overrides)
    try:
        return Study(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

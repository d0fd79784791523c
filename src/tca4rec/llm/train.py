"""LoRA fine-tuning of a host LLM recommender with TCA4Rec soft labels, on Hugging Face's Trainer.

The Trainer brings mixed precision, gradient accumulation, checkpoints, resuming, DDP
under ``torchrun`` / ``accelerate launch``, early stopping and the progress bar. We
override only what is ours:

- ``compute_loss``: the frozen CF model scores every item, the Collaborative Tokenizer
  turns those logits into sparse soft labels on the target title's trie path, and
  ``soft_ntp_loss`` compares them with the LLM's next-token distribution. The loss is
  normalized by the number of target tokens of the whole accumulated (and, under DDP,
  global) batch, so 1 process x batch 4 and 2 processes x batch 2 take the same step.
- ``evaluate``: trie-constrained beam search on a few valid rows -> ``eval_HR@3``, the
  metric that picks the best checkpoint (``load_best_model_at_end``) and drives early
  stopping.
- saving/loading: only the LoRA adapter (peft, safetensors) and the llara projector, never
  the frozen base model.

A run folder holds ``config.json`` (the full ``TrainConfig`` plus dataset / tokenizer
fingerprints), ``llm.json`` (the modules LoRA adapts, trainable parameters, base dtype),
``checkpoints/``, ``train_log.jsonl`` and, when done, ``adapter/``,
``projector.safetensors`` (llara), ``ct.safetensors`` (the Collaborative Tokenizer and its trie) and ``train_state.json``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pickle
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm
from transformers import EarlyStoppingCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_pt_utils import get_length_grouped_indices, safe_globals

from tca4rec.align import soft_ntp_loss
from tca4rec.cf.run import read_run_config
from tca4rec.errors import ConfigError, RunError
from tca4rec.evaluate.metrics import hit_ranks, summarize
from tca4rec.io import atomic_write_json, atomic_write_jsonl, check_own_folder, exclusive_use, remove_own_folder
from tca4rec.llm.config import RESUMABLE_CHANGES, RUN_FORMAT, TrainConfig
from tca4rec.llm.decoding import evaluate_rows
from tca4rec.llm.hosts import Host
from tca4rec.llm.run import CT_FILE, LLM_RUN_FILES, Signals, build_host, fingerprints_of, process_state, report_adapters
from tca4rec.llm.weights import load_weights, save_weights
from tca4rec.validate import loads_json, read_jsonl


class LengthGroupedRows(Sampler[int]):
    """Training row order that batches rows of similar length (prompt + title), so left padding
    stops costing compute: Hugging Face's length grouping (random mega-batches, sorted by length
    inside), re-seeded every epoch from the run's seed so that a resumed run sees the same order."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) each epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def row_lengths(host: Host, split) -> list[int]:
    """Tokens a training row feeds the model: its prompt, then its target title + EOS."""
    title_lengths = (host.target_tokens >= 0).sum(1).tolist()  # per item column
    return [len(host.builder.build([host.title_ids[i] for i in row[row > 0].tolist()]).ids) + title_lengths[t - 1]
            for row, t in zip(split.histories, split.targets.tolist())]


class RowDataset(Dataset):
    """Row indices of a split; the collator turns a list of them into model inputs."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, row: int) -> int:
        return row


class RowCollator:
    """Rows -> the tensors ``Host.forward`` and ``compute_loss`` need (same prompts as decoding)."""

    def __init__(self, host: Host, split) -> None:
        self.host = host
        self.users = torch.tensor(split.users)  # a copy: dataset arrays are read-only
        self.histories = torch.tensor(split.histories)
        self.items = torch.tensor(split.targets) - 1  # item columns

    def __call__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(rows, dtype=torch.long)
        prompt = self.host.prompts(self.histories[index])
        # On the CPU whatever device the host sits on: batches are pinned and moved by the Trainer.
        target_tokens = self.host.targets(self.items[index]).cpu()
        return {"users": self.users[index], "histories": self.histories[index], "items": self.items[index],
                "input_ids": prompt.input_ids, "attention_mask": prompt.attention_mask,
                "slot_positions": prompt.slot_positions, "user_slot": prompt.user_slot,
                "target_tokens": target_tokens,
                # Only for the Trainer's count of target tokens across accumulation steps/processes.
                "labels": target_tokens.masked_fill(target_tokens < 0, -100)}


class JsonlLogCallback(TrainerCallback):
    """Keeps ``train_log.jsonl`` (one record per log call), rewritten atomically by rank 0."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        # On resume, keep what was logged up to the checkpoint; later lines are replayed.
        if self.path.is_file():
            self.records = [r for r in self._read() if r.get("step", 0) <= state.global_step]

    def _read(self) -> list[dict]:
        """The log's records; a damaged log (edited by hand) is a RunError naming the line."""
        try:
            return [record for _, record in read_jsonl(self.path)]
        except RunError as e:
            raise RunError(f"{e}; repair or remove it to resume") from None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.records.append({"step": state.global_step, "epoch": state.epoch, **logs})
            atomic_write_jsonl(self.path, self.records)


class TrainingBar(ProgressCallback):
    """Training progress as one bar: steps, ETA, and the latest loss, rows/s and valid HR@3 in
    its postfix. Hugging Face's own bar prints every log record as a raw dict under it, which
    scrolls the stage headers away; the full records are in ``train_log.jsonl``."""

    def __init__(self, rows_per_step: int, desc: str) -> None:
        super().__init__()
        self.rows_per_step, self.desc = rows_per_step, desc
        self.postfix: dict[str, str] = {}
        self.last = (0, time.monotonic())  # (step, time) of the last training log

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                                     dynamic_ncols=True)
        self.current_step = state.global_step
        self.last = (state.global_step, time.monotonic())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs:
            step, since = self.last
            seconds = time.monotonic() - since
            if state.global_step > step and seconds > 0:
                self.postfix["rows/s"] = f"{(state.global_step - step) * self.rows_per_step / seconds:.1f}"
            self.postfix["loss"] = f"{logs['loss']:.3f}"
            self.last = (state.global_step, time.monotonic())
        if "eval_HR@3" in logs or "HR@3" in logs:
            self.postfix["valid HR@3"] = f"{logs.get('eval_HR@3', logs.get('HR@3')):.3f}"
        self.training_bar.set_postfix(self.postfix, refresh=True)


class TimeBudgetCallback(TrainerCallback):
    """Stops training once ``max_minutes`` of wall-clock time are spent (like Lightning's
    ``max_time``): the last step is evaluated and saved, so the best checkpoint is still chosen
    among evaluated ones. Budgeted runs (a lent GPU, a CI slot) end on time instead of being killed.

    ``eval_rows``: the budget also covers decoding that many rows after training (the test
    split), at the rate measured by the valid evaluations so far (x1.25 for safety), so
    training stops early enough for them.
    """

    def __init__(self, max_minutes: float, eval_rows: int = 0) -> None:
        self.seconds = max_minutes * 60
        self.eval_rows = eval_rows
        self.rows_per_s: float | None = None
        self.started = 0.0
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.rows_per_s = (metrics or {}).get("eval_rows_per_s", self.rows_per_s)

    def on_step_end(self, args, state, control, **kwargs):
        reserve = 1.25 * self.eval_rows / self.rows_per_s if self.eval_rows and self.rows_per_s else 0.0
        if time.monotonic() - self.started + reserve >= self.seconds and not control.should_training_stop:
            control.should_training_stop = True
            control.should_save = True
            control.should_evaluate = args.eval_strategy != "no"
            self.stopped_at = state.global_step
        return control


class TCA4RecTrainer(Trainer):
    """Trainer with the TCA4Rec loss, beam-search model selection and adapter-only saving."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the whole accumulated batch's token count

    def __init__(self, *args, tca, eval_split=None, row_lengths: list[int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.row_lengths = row_lengths  # set: batches grouped by length
        # Tokens fed since the last log: real (attended) ones and all slots of the padded batches.
        self.tokens = {"real": 0, "slots": 0, "since": time.monotonic(), "step": 0}
        self.tca = tca  # a tca4rec.llm.run.Signals: frozen CF model, Collaborative Tokenizer, trie
        # Labels are built where the CF logits are (the GPU in training); the decoder's trie stays on the CPU.
        self.label_ct = tca.ct.to(self.args.device)
        self.eval_split = eval_split
        self.config: TrainConfig = tca.config

    def _get_train_sampler(self, train_dataset=None):
        if self.row_lengths is None:
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedRows(self.row_lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                 self.args.seed)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Training logs gain throughput: real (non-pad) tokens per second and per optimizer step,
        and the share of computed positions that were real rather than padding."""
        t = self.tokens
        steps = self.state.global_step - t["step"]
        if "loss" in logs and t["slots"] and steps > 0:
            logs["tokens_per_s"] = round(t["real"] / max(time.monotonic() - t["since"], 1e-9), 1)
            logs["real_tokens_per_step"] = round(t["real"] / steps, 1)
            logs["real_token_share"] = round(t["real"] / t["slots"], 4)
            self.tokens = {"real": 0, "slots": 0, "since": time.monotonic(), "step": self.state.global_step}
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            if not self.tokens["slots"]:  # throughput counts from the first batch after a log
                self.tokens["since"] = time.monotonic()
            fed = inputs["target_tokens"][:, :-1]  # the sequence is prompt + title tokens but the last
            self.tokens["real"] += int(inputs["attention_mask"].sum()) + int((fed >= 0).sum())
            self.tokens["slots"] += inputs["attention_mask"].numel() + fed.numel()

        host_config = self.config.host_config()
        # Logits in trie order: the labels skip a random read per logit (see Signals.cf_signals).
        cf_logits, history_cf, user_cf = self.tca.cf_signals(inputs["users"], inputs["histories"], trie_order=True,
                                                             logits=self.config.alpha > 0)
        labels = self.label_ct.soft_labels(cf_logits, inputs["items"], alpha=self.config.alpha,
                                           temperature=self.config.temperature,
                                           trie_order=True).to(inputs["input_ids"].device)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       slot_positions=inputs["slot_positions"], user_slot=inputs["user_slot"],
                       target_tokens=inputs["target_tokens"], history_cf=history_cf, user_cf=user_cf)
        loss = soft_ntp_loss(logits.float(), labels, form=self.config.form, masked=host_config.masked,
                             tau=host_config.softmax_tau)
        if num_items_in_batch is not None:
            # mean over this batch -> sum over it / tokens of the global accumulated batch;
            # DDP averages gradients over processes, hence the factor world_size.
            local_tokens = (inputs["labels"] != -100).sum()
            loss = loss * local_tokens / num_items_in_batch * self.accelerator.num_processes
        return (loss, logits) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        host = self.accelerator.unwrap_model(self.model)
        started = time.monotonic()
        items, _ = evaluate_rows(host, self.tca, self.eval_split, beams=self.config.eval_beams,
                                 k=self.config.eval_beams, batch_size=self.args.per_device_eval_batch_size,
                                 device=self.args.device, desc="valid HR@3")
        ranks = hit_ranks(items, self.eval_split.targets, self.tca.dataset.title_group)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in summarize(ranks).items()
                   if name in ("HR@3", "NDCG@3", "HR@10")}
        metrics[f"{metric_key_prefix}_rows_per_s"] = len(self.eval_split) / (time.monotonic() - started)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if self.args.should_save:
            save_weights(self.accelerator.unwrap_model(self.model), Path(output_dir or self.args.output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights(self.accelerator.unwrap_model(self.model), Path(resume_from_checkpoint))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        scheduler = self.lr_scheduler
        if checkpoint is None or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        # The restored optimizer holds the rate the checkpoint's schedule had reached: 0 at the end
        # of a finished run. Where --resume changed max_steps or epochs, the schedule is the new
        # one, so the next step starts from its rate at this step (unchanged runs: the same value).
        rates = [base * rate(scheduler.last_epoch) for base, rate in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, rates):
            group["lr"] = lr
        scheduler._last_lr = rates  # what get_last_lr(), and so the train log, reports

    def _load_best_model(self) -> None:
        load_weights(self.accelerator.unwrap_model(self.model), Path(self.state.best_model_checkpoint))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last), or None."""
    folder = run_dir / "checkpoints"
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def check_checkpoint(checkpoint: Path) -> None:
    """RunError naming the first file of ``checkpoint`` that resuming could not load. The Trainer reads
    optimizer, scheduler and RNG state with ``torch.load(weights_only=True)``, which refuses a pickle
    of anything else (and never runs it); reading them the same way first turns such a file into one
    line naming it, before the model loads, instead of a traceback from inside the Trainer."""
    for path in [*sorted(checkpoint.glob("*.pt")), *sorted(checkpoint.glob("rng_state*.pth"))]:
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunError(f"--resume: {path} is not a loadable checkpoint file ({reason}); move the checkpoint "
                           "folder away to resume from an earlier one, or start over with --overwrite") from None


def check_run_dir(config: TrainConfig, resume: bool, overwrite: bool, fingerprints: dict) -> bool:
    """Check the run folder against --resume / --overwrite before anything is written or
    deleted (or a model loaded); returns whether a run is there to resume.

    ``--overwrite`` replaces only a folder this project wrote: a tca4rec LLM run whose every
    entry is one a run writes (``LLM_RUN_FILES``); anything else is refused, never deleted.
    """
    run_dir = Path(config.out)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a run folder; choose another --out")
    exists = run_dir.exists() and any(run_dir.iterdir())
    if exists and not resume and not overwrite:
        raise RunError(f"{run_dir} already exists: pass --resume to continue it or --overwrite to start over")
    stored_path = run_dir / "config.json"
    stored = _read_run_record(stored_path) if exists else None
    if exists and stored is None:
        raise RunError(f"{run_dir} is {'a CF run folder' if _is_cf_run(run_dir) else 'not a tca4rec LLM run folder'} "
                       f"(its config.json is not an LLM run's); refusing to {'delete' if overwrite else 'resume'} it: "
                       "choose another --out")
    if exists and overwrite:
        check_own_folder(run_dir, LLM_RUN_FILES, "tca4rec LLM run")
        return False
    if stored is not None and config.lora_targets is None:
        # Runs made before LoRA targets were chosen per architecture stored the list itself: keep it.
        config.lora_targets = stored.get("config", {}).get("lora_targets")
    if exists:
        for key, value in fingerprints.items():
            if stored.get(key) != value:
                raise RunError(f"{run_dir} was trained with another {key.replace('_', ' ')}; cannot resume it here")
        differ = sorted(k for k, v in dataclasses.asdict(config).items()
                        if k not in RESUMABLE_CHANGES and stored["config"].get(k) != v)
        if differ:
            raise RunError(f"--resume {run_dir}: options differ from the run's config.json: {', '.join(differ)}")
    return exists


def _is_cf_run(folder: Path) -> bool:
    try:
        read_run_config(folder)
    except RunError:
        return False
    return True


def _read_run_record(path: Path) -> dict | None:
    """The run record in ``path`` if it is a tca4rec LLM run's config.json, else None."""
    try:
        record = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RUN_FORMAT else None


def prepare_run_dir(config: TrainConfig, resume: bool, overwrite: bool, fingerprints: dict) -> Path | None:
    """Make the run folder (after ``check_run_dir``): an overwritten run is removed, the
    config written; returns the checkpoint to resume from. Only the main process deletes or
    writes; the others wait for it."""
    run_dir = Path(config.out)
    state = process_state()
    exists = check_run_dir(config, resume, overwrite, fingerprints)
    state.wait_for_everyone()  # every process looks before the main one deletes or writes
    if overwrite and run_dir.is_dir() and any(run_dir.iterdir()) and state.is_main_process:
        remove_own_folder(run_dir, LLM_RUN_FILES, "tca4rec LLM run")
    state.wait_for_everyone()
    if state.is_main_process:
        atomic_write_json(run_dir / "config.json",
                          {"format": RUN_FORMAT, **fingerprints, "config": dataclasses.asdict(config)})
    state.wait_for_everyone()
    return latest_checkpoint(run_dir) if exists else None


def training_arguments(config: TrainConfig, run_dir: Path) -> TrainingArguments:
    evaluate = config.eval_rows > 0
    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=(config.eval_steps or config.save_steps) if evaluate else None,
        load_best_model_at_end=evaluate,
        metric_for_best_model="HR@3" if evaluate else None,
        greater_is_better=True,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        fp16=on_gpu and not bf16,
        use_cpu=not on_gpu,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        disable_tqdm=False,
    )


def build_trainer(config: TrainConfig, *, resume: bool = False, overwrite: bool = False
                  ) -> tuple[TCA4RecTrainer, Path | None]:
    """The ready Trainer of a run (folder checked, config.json written) and the checkpoint to resume."""

    process_state()  # first, so that a CPU torchrun launch is distributed
    run_dir = Path(config.out)
    set_seed(config.seed)
    tca = Signals.build(config)
    fingerprints = fingerprints_of(tca.dataset, tca.tokenizer)
    if check_run_dir(config, resume, overwrite, fingerprints) and latest_checkpoint(run_dir) is not None:
        check_checkpoint(latest_checkpoint(run_dir))  # refusals come before the model loads
    set_seed(config.seed)  # the same LoRA / projector initialization whatever was loaded before
    host = build_host(config, tca, trainable=True)  # a bad --lora-targets is refused before the folder exists
    checkpoint = prepare_run_dir(config, resume, overwrite, fingerprints)
    report_adapters(host, config, run_dir)
    train_split = tca.dataset.split("train").head(config.train_limit)
    eval_split = tca.dataset.split("valid").head(config.eval_rows) if config.eval_rows else None
    callbacks: list[TrainerCallback] = [JsonlLogCallback(run_dir / "train_log.jsonl")]
    if eval_split is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    if config.max_minutes is not None:
        callbacks.append(TimeBudgetCallback(config.max_minutes, config.budget_eval_rows))
    trainer = TCA4RecTrainer(
        model=host,
        args=training_arguments(config, run_dir),
        train_dataset=RowDataset(len(train_split)),
        eval_dataset=RowDataset(len(eval_split)) if eval_split is not None else None,
        data_collator=RowCollator(host, train_split),
        callbacks=callbacks,
        tca=tca,
        eval_split=eval_split,
        row_lengths=row_lengths(host, train_split) if config.group_by_length else None,
    )
    trainer.remove_callback(ProgressCallback)
    rows_per_step = config.batch_size * config.grad_accum * trainer.args.world_size
    trainer.add_callback(TrainingBar(rows_per_step, f"train {config.host} (alpha {config.alpha:g})"))
    tca.to(trainer.args.device)
    return trainer, checkpoint


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Fine-tune ``config.host`` with LoRA (and TCA4Rec soft labels if alpha > 0); returns the run folder."""
    run_dir = Path(config.out)
    with exclusive_use(run_dir, "train"):
        trainer, checkpoint = build_trainer(config, resume=resume, overwrite=overwrite)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        state = process_state()
        if state.is_main_process:
            save_weights(trainer.accelerator.unwrap_model(trainer.model), run_dir)
            trainer.tca.ct.save(run_dir / CT_FILE)
            atomic_write_json(run_dir / "train_state.json", {
                "global_step": trainer.state.global_step, "epoch": trainer.state.epoch,
                "best_metric": trainer.state.best_metric,
                "stopped_by_time_budget_at_step": next((c.stopped_at for c in trainer.callback_handler.callbacks
                                                        if isinstance(c, TimeBudgetCallback)), None),
                "best_checkpoint": Path(trainer.state.best_model_checkpoint).name
                if trainer.state.best_model_checkpoint else None})
        state.wait_for_everyone()
    return run_dir

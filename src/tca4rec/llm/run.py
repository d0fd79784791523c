"""LLM run folders: what training and inference share, and loading a finished run safely.

``Signals`` gathers the fixed, non-trained parts of a run: the dataset, the tokenizer, the
Collaborative Tokenizer (with its title trie) and the frozen CF model. ``build_host`` puts
a LoRA-wrapped LLM (and the llara projector) on top. ``load_llm_run`` rebuilds both from a
run folder and loads the trained weights, reading only JSON and safetensors: a pickle file
dropped into the folder (``*.bin``, ``*.pt``) is never opened.

A run is refused (``RunError``) when the dataset or the tokenizer differs from the ones it
was trained with: their fingerprints are stored in ``config.json``. That file is checked like
a study file when read (``read_run_record``): a value of the wrong type or range is one line
naming the file and the field, never a ``TypeError`` from deep inside.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from peft import LoraConfig, get_peft_model

from tca4rec.align import CollaborativeTokenizer
from tca4rec.cf import load_cf_run
from tca4rec.data import load_dataset
from tca4rec.errors import ConfigError, RunError
from tca4rec.io import atomic_write_json, file_sha256
from tca4rec.llm.config import RUN_FORMAT, TrainConfig
from tca4rec.llm.hosts import Host
from tca4rec.llm.lora import AdapterReport, check_adapted, plan_lora
from tca4rec.llm.model import load_causal_lm, load_tokenizer
from tca4rec.llm.prompts import title_token_ids
from tca4rec.llm.weights import load_weights
from tca4rec.validate import check_fields, check_value, loads_json

CT_FILE = "ct.safetensors"
LLM_FILE = "llm.json"  # the adapted modules, trainable parameter count and base dtype of a run
# Everything a run folder may hold (top level): what --overwrite may delete, and nothing else.
LLM_RUN_FILES = ("config.json", LLM_FILE, CT_FILE, "adapter", "projector.safetensors", "checkpoints", "train_log.jsonl",
                 "train_state.json", "metrics_*.json", "predictions_*.jsonl", "decode_*.partial.json",
                 "beta_tuning*.json", "fusion")
# The top-level fields of a run's config.json besides its format and its TrainConfig (``config``).
RECORD_FIELDS = {"dataset_fingerprint": str, "tokenizer_fingerprint": str, "num_items": int}


def process_state():
    """accelerate's process state. On a machine without GPU it must be created with
    ``cpu=True`` before anything else asks for it: only then does a ``torchrun`` launch
    become a gloo process group instead of N independent single-process runs."""
    return PartialState(cpu=not torch.cuda.is_available())


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary and EOS id: a run refuses any other tokenizer."""
    h = hashlib.sha256()
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        h.update(f"{index}\t{token}\n".encode("utf-8"))
    h.update(f"eos={tokenizer.eos_token_id}".encode())
    return h.hexdigest()[:16]


def fingerprints_of(dataset, tokenizer) -> dict:
    return {"dataset_fingerprint": dataset.fingerprint(), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
            "num_items": dataset.num_items}


@dataclass
class Signals:
    """The fixed parts of a run: dataset, tokenizer, title token ids, CT (and trie), frozen CF model."""

    config: object  # TrainConfig
    dataset: object  # RecDataset
    tokenizer: object
    title_ids: list[list[int]]  # title_ids[i] = item i's title tokens; [0] = [] (padding)
    ct: object  # CollaborativeTokenizer over item columns 0..N-1 (item id = column + 1)
    cf: torch.nn.Module | None
    _trie_tables: dict = field(default_factory=dict, repr=False)  # device -> CF item table in trie order

    @property
    def trie(self):
        return self.ct.trie

    @classmethod
    def build(cls, config, ct_path: Path | None = None, expected: dict | None = None) -> "Signals":
        """Load the dataset, tokenizer and CF run of ``config``; the CT from ``ct_path`` or built fresh.

        ``expected``: a run's stored fingerprints; a different dataset or tokenizer is a RunError.
        """
        dataset = load_dataset(config.data)
        tokenizer = load_tokenizer(config.llm)
        if expected is not None:
            for key, value in fingerprints_of(dataset, tokenizer).items():
                if expected.get(key) != value:
                    what = "tokenizer" if key == "tokenizer_fingerprint" else "dataset"
                    source = config.llm if what == "tokenizer" else config.data
                    raise RunError(f"the run was trained on another {what} ({key} {expected.get(key)}, "
                                   f"{source} has {value})")
        if ct_path is not None:
            ct = CollaborativeTokenizer.load(ct_path)
            if ct.num_items != dataset.num_items:
                raise RunError(f"{ct_path} covers {ct.num_items} items, the dataset {dataset.num_items}")
            title_ids = [[]] + ct.trie.item_token_ids()
        else:
            title_ids = [[]] + title_token_ids(tokenizer, dataset.titles[1:])
            ct = CollaborativeTokenizer(title_ids[1:], tokenizer.eos_token_id)
        cf = None
        if config.cf is not None:
            cf = load_cf_run(config.cf, dataset)
            if cf.num_items != dataset.num_items:
                raise RunError(f"--cf {config.cf} scores {cf.num_items} items, the dataset has {dataset.num_items}")
            cf.requires_grad_(False).eval()
        return cls(config, dataset, tokenizer, title_ids, ct, cf)

    def to(self, device) -> "Signals":
        if self.cf is not None:
            self.cf.to(device)
        return self

    @torch.no_grad()
    def cf_signals(self, users: torch.Tensor, histories: torch.Tensor, trie_order: bool = False,
                   logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(item logits [B, N+1], history item embeddings [B, H, D], user embeddings [B, D]).

        ``trie_order``: the logits are [B, N] instead, column p for item column ``trie.order[p]``
        (no padding column), the order ``soft_labels(..., trie_order=True)`` reads without a
        gather. The frozen CF model's item table is permuted once (kept per device), so each
        batch costs the same matmul as item order, not a random read per logit.
        Without a CF model (alpha 0, no embedding host), or with ``logits=False`` (alpha 0: the
        CT ignores them), the logits are zeros (one broadcast column, no [B, N] memory) and
        the CF model computes only the embeddings, if any.
        """
        width = self.dataset.num_items + (0 if trie_order else 1)
        zeros = torch.zeros(len(users), 1, device=users.device).expand(-1, width)
        if self.cf is None:
            return zeros, None, None
        device = self.cf.device
        users, histories = users.to(device), histories.to(device)
        hidden = self.cf.user_embedding(users, histories)  # [B, D]
        if not logits:
            item_logits = zeros
        elif trie_order:
            item_logits = (hidden @ self._trie_order_items(device).T).float()
        else:
            item_logits = self.cf.item_logits(hidden).float()
        return item_logits, self.cf.item_embeddings()[histories].float(), hidden.float()

    def cf_embeddings(self, users: torch.Tensor, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(history item embeddings [B, H, D], user embeddings [B, D]) for the embedding hosts,
        without the [B, N] logits (decoding needs no logits; at a million items they are 64 MB per 16 rows)."""
        if self.cf is None:
            raise RunError("this run has no CF model, so no CF embeddings")
        return self.cf_signals(users, histories, logits=False)[1:]

    def _trie_order_items(self, device: torch.device) -> torch.Tensor:
        """The CF item table [N, D] in trie order (padding row dropped), built once per device."""
        if device not in self._trie_tables:
            table = self.cf.item_embeddings()[1:]
            self._trie_tables[device] = table.index_select(0, self.trie.order.to(table.device)).detach()
        return self._trie_tables[device]


def build_host(config, signals: Signals, trainable: bool) -> Host:
    """A fresh LoRA-wrapped host (random LoRA/projector init under the current seed).

    LoRA goes on ``config.lora_targets``, by default every attention projection of the
    architecture (``tca4rec.llm.lora``); a target list that matches nothing is a ConfigError.
    """
    llm = load_causal_lm(config.llm)
    plan = plan_lora(llm, config.lora_targets, config.llm)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=plan.targets, fan_in_fan_out=plan.fan_in_fan_out, task_type="CAUSAL_LM",
                      inference_mode=not trainable)
    with warnings.catch_warnings():
        # peft probes the deprecated `is_gradient_checkpointing` alias; the notice is theirs to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        llm = get_peft_model(llm, lora)
    check_adapted(llm, plan, config.llm)
    cf_dim = signals.cf.embedding_dim if signals.cf is not None else None
    return Host(config.host_config(), llm, signals.tokenizer, signals.title_ids, signals.trie.seqs, cf_dim=cf_dim)


def report_adapters(host: Host, config, run_dir: Path) -> None:
    """Print what trains (modules, parameter counts, dtype) and store it as the run's ``llm.json``."""
    report = AdapterReport.of(host, config.llm)
    if process_state().is_main_process:
        print(report.describe(), flush=True)
        atomic_write_json(run_dir / LLM_FILE, report.record())


@dataclass
class LLMRun:
    """A trained run, ready to decode: ``host`` is in eval mode with the adapter loaded."""

    run_dir: Path
    config: object  # TrainConfig
    record: dict  # the whole config.json
    signals: Signals
    host: Host

    @property
    def dataset(self):
        return self.signals.dataset

    @property
    def tokenizer(self):
        return self.signals.tokenizer

    @property
    def trie(self):
        return self.signals.trie

    @property
    def cf(self):
        return self.signals.cf

    @property
    def name(self) -> str:
        """e.g. ``tallrec+tca(alpha=0.1)`` or ``msl``."""
        c = self.config
        return c.host if c.alpha == 0 else f"{c.host}+tca(alpha={c.alpha:g})"


def weights_stamp(run_dir: Path) -> list:
    """Size and SHA-256 of every trained-weights file: a retrained run never reuses old decodings, while
    the same weights checked out or copied again (new modification times) resume where they stopped."""
    files = sorted(p for p in run_dir.rglob("*.safetensors") if "checkpoints" not in p.parts)
    return [[str(p.relative_to(run_dir)), p.stat().st_size, file_sha256(p)] for p in files]


def read_run_record(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist")
    path = run_dir / "config.json"
    try:
        record = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not an LLM run folder: config.json is missing") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise RunError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise RunError(f"{run_dir} is not an LLM run folder (config.json has no format {RUN_FORMAT!r}; "
                       "a CF run is used with `tca4rec cf evaluate`)")
    try:
        for key, kind in RECORD_FIELDS.items():
            if key in record:
                check_value(record[key], kind, key)
        check_value(record.get("config"), dict, "config")
        check_fields(TrainConfig, record["config"], "config")
        TrainConfig.from_dict(record["config"])  # the ranges, as training checked them
    except ConfigError as e:  # named as a field of the file, not as a command-line option
        raise RunError(f"{path}: {str(e).removeprefix('--')}") from None
    except TypeError as e:  # a required field missing
        raise RunError(f"{path}: field 'config': {e}") from None
    return record


def load_run_signals(run_dir: Path, data: str | Path | None = None) -> tuple[dict, TrainConfig, Signals]:
    """A run's ``config.json``, its TrainConfig and its ``Signals`` (checked against the dataset and
    tokenizer it was trained with), without the LLM: what re-ranking its decoded beams needs."""
    record = read_run_record(run_dir)
    values = dict(record["config"])
    if data is not None:
        values["data"] = str(data)
    config = TrainConfig.from_dict(values)
    # The CT is the catalog's titles tokenized: rebuilt when absent (a run committed without
    # it), the same as stored because the dataset and tokenizer fingerprints must match.
    ct_path = run_dir / CT_FILE
    return record, config, Signals.build(config, ct_path=ct_path if ct_path.is_file() else None, expected=record)


def load_llm_run(run_dir: str | Path, data: str | Path | None = None, merge: bool = True,
                 device: str | torch.device | None = None) -> LLMRun:
    """Load a finished run (``data`` overrides the dataset folder stored in its config).

    ``merge`` folds the LoRA weights into the base model (faster decoding, same outputs).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "adapter").is_dir():
        read_run_record(run_dir)  # not a run folder at all: that is the error to name
        raise RunError(f"{run_dir} is incomplete (no adapter/): finish it with `tca4rec train --resume`")
    record, config, signals = load_run_signals(run_dir, data)
    host = build_host(config, signals, trainable=False)
    load_weights(host, run_dir)
    if merge:
        host.llm = host.llm.merge_and_unload()
    host.eval()
    if device is not None:
        host.to(device)
        signals.to(device)
    return LLMRun(run_dir, config, record, signals, host)

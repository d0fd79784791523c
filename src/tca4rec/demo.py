"""``tca4rec demo``: the main job on the embedded defaults, end to end: about 10 minutes on 2 CPU cores.

1. a synthetic dataset (or ``--data DIR``); 2. SASRec; 3. the tallrec host fine-tuned
twice with the same seed, data and budget: alpha = 0 (plain next-token prediction) and
alpha = 0.1 (TCA4Rec); 4. all three evaluated on the same held-out rows with
trie-constrained beam search; 5. a table and a report folder (report.md, results.json,
PNG plots) that says whether the LLM + TCA4Rec difference is significant at this size and
what difference this many rows could detect (MDE). The demo shows the pipeline; whether the
method helps is the study's question (README "Results").

``guided=True`` (``tca4rec demo --guided``) also decodes both LLM runs with CF-guided
decoding, beta tuned on a few valid rows (``tca4rec tune-beta``): two more rows in the
table, about 8 more minutes on 2 CPU cores. Run after a plain demo with the same ``--out``,
it only adds those decodings.

It is a two-cell study (see ``tca4rec.study``), so it resumes where it stopped when run
again with the same ``--out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tca4rec.study import Study, StudyConfig

DEMO_SYNTH = {"num_items": 400, "num_users": 600, "seed": 0}
BETA_GRID = [0, 0.5, 1, 2]  # CF weights tried on valid rows by the guided demo


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
    guided: bool = False  # also CF-guided decoding of both LLM runs, beta tuned on valid rows
    beta_rows: int = 16  # valid rows decoded per beta of BETA_GRID when guided

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
            train=train, betas=[0, "auto"] if self.guided else [0],
            beta_tuning={"rows": self.beta_rows, "grid": BETA_GRID} if self.guided else {},
            labels={f"{name}/cf/sasrec-s{self.seed}": "SASRec",
                    f"{name}/llm/tallrec-nocf-a0-s{self.seed}": "LLM",
                    f"{name}/llm/tallrec-sasrec-a0.1-s{self.seed}": "LLM + TCA4Rec"})


def run_demo(config: DemoConfig, log=print) -> Path:
    """Run (or resume) the demo; returns the report folder."""
    study = Study(config.study_config(), log=log)
    log(f"tca4rec demo: dataset {'synthetic (generated)' if config.data is None else config.data}; "
        f"LLM {config.llm or 'SmolLM2-135M-Instruct (embedded)'}; SASRec on all train rows; "
        f"LLM fine-tuning on {config.train_limit} train rows, {config.max_steps} steps of batch {config.batch_size}; "
        f"evaluation on the first {config.test_limit} test rows with 10-beam trie-constrained search"
        + (f", also CF-guided (beta tuned on {config.beta_rows} valid rows). " if config.guided else ". ")
        + "This shows the pipeline at a size a laptop runs in minutes; it cannot tell whether TCA4Rec helps "
        "(see the report's MDE, and README 'Results' for the evidence).")
    return study.run()

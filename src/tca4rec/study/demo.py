"""``tca4rec demo``: the main job on the embedded defaults, end to end: about 10 minutes on 2 CPU cores.

1. a synthetic dataset (or ``--data DIR``); 2. SASRec; 3. the tallrec host fine-tuned
twice with the same seed, data and budget: alpha = 0 (plain next-token prediction) and
alpha = 0.1 (TCA4Rec); 4. all three evaluated on the same held-out rows with
trie-constrained beam search; 5. a table and a report folder (report.md, results.json,
PNG plots) that says whether the LLM + TCA4Rec difference is significant at this size and
what difference this many rows could detect (MDE). The demo shows the pipeline; whether the
method helps is the study's question (README "Results").

The fused rows (``guided=True``, the default; ``--no-guided`` skips them): both LLM runs are
also decoded with CF-guided decoding, the product of the LLM and SASRec, beta tuned on a few
valid rows over ``DEMO_BETA_GRID`` (``tca4rec tune-beta``), with paired tests against plain
decoding, against SASRec and between the two fused rows. Nothing is retrained for them: run
after a ``--no-guided`` demo with the same ``--out``, the demo only adds those decodings.

It is a two-cell study (see ``tca4rec.study.runner``), so it resumes where it stopped when run
again with the same ``--out``.
"""

from __future__ import annotations

from pathlib import Path

from tca4rec.study.config import DemoConfig
from tca4rec.study.runner import Study


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

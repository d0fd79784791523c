"""Fixtures of the learned-fusion tests: a tiny LLM run with its SASRec teacher, and a fusion fit
on its first 16 valid rows with a tiny grid (seconds on a CPU: signal quality is not tested)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_GRID = {"num_leaves": [3, 4], "min_data_in_leaf": [1, 3], "trees": [3, 8]}


@pytest.fixture(scope="session")
def tiny_fusion_config():
    from tca4rec.fuse.config import FusionConfig

    return FusionConfig(rows=16, k=10, beams=4, grid=TINY_GRID)


@pytest.fixture(scope="session")
def fusion_cf_run(synth_dataset, tmp_path_factory) -> Path:
    from tca4rec.cf import train_cf

    return train_cf(synth_dataset, "sasrec", tmp_path_factory.mktemp("fusion_cf") / "sasrec", epochs=2, limit=400,
                    progress=False)


@pytest.fixture(scope="session")
def fused_run(synth_dir, tiny_llm_dir, fusion_cf_run, tiny_fusion_config, tmp_path_factory) -> Path:
    """A one-step tallrec run (teacher: ``fusion_cf_run``) with its learned fusion in RUN/fusion."""
    from tca4rec.fuse.fit import fit_fusion
    from tca4rec.llm.config import TrainConfig
    from tca4rec.llm.train import train

    run = train(TrainConfig(data=str(synth_dir), out=str(tmp_path_factory.mktemp("fusion_runs") / "tallrec"),
                            llm=str(tiny_llm_dir), cf=str(fusion_cf_run), alpha=0.0, max_steps=1, save_steps=1,
                            eval_rows=0, batch_size=2, grad_accum=1, train_limit=8, logging_steps=1))
    fit_fusion(run, config=tiny_fusion_config)  # the CF run: the run's teacher
    return run

"""scripts/portable_paths.py: run records of a committed study lose this machine's paths, nothing else."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("portable_paths", REPO / "scripts" / "portable_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_absolute_paths_beside_the_repository_become_relative_to_it(tmp_path):
    script = load_script()
    root, run = tmp_path / "repo", tmp_path / "repo" / "docs" / "run" / "cell"
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    record = {"config": {"data": str(tmp_path / "shared" / "data" / "Office"), "out": str(run), "cf": None,
                         "lr": 5e-4, "elsewhere": "/opt/models/x", "titles": ["a/b", str(root / "x")]}}
    (run / "config.json").write_text(json.dumps(record))
    untouched = run / "checkpoints" / "checkpoint-5" / "trainer_state.json"
    untouched.write_text(json.dumps({"best": str(run)}))

    assert script.rewrite(tmp_path / "repo" / "docs", root) == [run / "config.json"]
    config = json.loads((run / "config.json").read_text())["config"]
    assert config == {"data": "../shared/data/Office", "out": "docs/run/cell", "cf": None, "lr": 5e-4,
                      "elsewhere": "/opt/models/x", "titles": ["a/b", "x"]}
    assert json.loads(untouched.read_text()) == {"best": str(run)}  # checkpoints are not committed
    assert script.rewrite(tmp_path / "repo" / "docs", root) == []  # already portable

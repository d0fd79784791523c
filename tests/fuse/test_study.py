"""The study file's ``fusion`` option: checked with the rest of the file, and a tiny study that fits
each cell's fusion on valid rows, re-ranks its test rows, reports it and, run again, reuses it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tca4rec.errors import ConfigError
from tca4rec.study.config import StudyConfig
from tca4rec.study.runner import Study, _config_record, load_study

from .conftest import TINY_GRID

STUDY = "name: x\nout: o\ndatasets: {d: data}\ngrid: [{host: [tallrec], cf: [sasrec], alpha: [0, 0.1]}]\n"


@pytest.mark.parametrize("line, message", [
    ("fusion: [rows]", "field 'fusion': \\['rows'\\] is not a mapping or null"),
    ("fusion: {rows: many}", "field 'fusion.rows': 'many' is not an integer"),
    ("fusion: {rows: 0}", "field 'fusion': rows 0: must be >= 1"),
    ("fusion: {rows: 3, holdout: 0.1}", "field 'fusion': rows 3: too few to hold out"),
    ("fusion: {k: 2.5}", "field 'fusion.k': 2.5 is not an integer"),
    ("fusion: {beams: 10}", "field 'fusion': unknown option\\(s\\) beams \\(known: grid, holdout"),
    ("fusion: {grid: {num_leaves: [1], min_data_in_leaf: [1], trees: [5]}}", "grid.num_leaves \\[1\\]: a non-empty"),
    ("fusion: {grid: {trees: [5]}}", "field 'fusion': grid .*give exactly num_leaves, min_data_in_leaf, trees"),
])
def test_a_bad_fusion_option_names_the_file_and_field(tmp_path, line, message):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY + line + "\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_study(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_the_fusion_option_takes_the_studys_beams_and_needs_a_cf_model(tmp_path):
    base = dict(name="x", out="o", datasets={"d": "data"}, base=str(tmp_path))
    grid = [{"host": ["tallrec"], "cf": ["sasrec"], "alpha": [0]}]
    config = StudyConfig(**base, grid=grid, beams=12, fusion={"rows": 100, "k": 5})
    assert (config.fusion_config().beams, config.fusion_config().k) == (12, 5)
    assert StudyConfig(**base, grid=grid, fusion={}).fusion_config().rows == 2000  # {}: the defaults
    assert "fusion" not in _config_record(StudyConfig(**base, grid=grid))  # saved studies stay as they were
    with pytest.raises(ConfigError, match="needs a CF model in the grid"):
        StudyConfig(**base, grid=[{"host": ["tallrec"]}], fusion={})


def test_a_study_fits_each_cells_fusion_on_valid_rows_and_reuses_it(tmp_path, synth_dir, tiny_llm_dir):
    config = StudyConfig(
        name="f", out=str(tmp_path / "out"), datasets={"d": str(synth_dir)}, eval_limit=4, cf={"epochs": 1},
        grid=[{"host": ["tallrec"], "cf": ["sasrec"], "alpha": [0]}], base=str(tmp_path),
        train={"train_limit": 8, "max_steps": 1, "batch_size": 2, "grad_accum": 1, "eval_rows": 0, "save_steps": 1,
               "llm": str(tiny_llm_dir)},
        fusion={"rows": 12, "k": 10, "grid": TINY_GRID})
    logs: list[str] = []
    report = Study(config, log=logs.append).run()
    assert sum(line.startswith("learned fusion of tallrec") for line in logs) == 1
    cell = tmp_path / "out" / "d" / "llm" / "tallrec-nocf-a0-s0"  # the host alone: fused with the study's SASRec
    fusion = json.loads((cell / "fusion" / "fusion.json").read_text())
    assert fusion["fit_rows"] == 12 and fusion["split"] == "valid" and fusion["cf_run"].endswith("cf/sasrec-s0")
    assert json.loads((cell / "metrics_test_fusion.json").read_text())["rows"] == 4
    results = json.loads((report / "results.json").read_text())["datasets"]["d"]
    assert "tallrec + learned fusion (SASRec, fit on valid)" in {m["method"] for m in results["methods"]}
    tested = {(t["a"], t["b"]) for t in results["significance"]}
    assert {("tallrec", "tallrec + learned fusion (SASRec, fit on valid)"),
            ("SASRec", "tallrec + learned fusion (SASRec, fit on valid)")} <= tested

    assert Study(config).plan() == []  # finished, fusion included: nothing to do again
    # the same folder as a study without the option: its report has no fusion rows and no tests of them
    plain = json.loads((Study(dataclasses.replace(config, fusion=None)).report() / "results.json").read_text())
    assert not any("learned fusion" in m["method"] for m in plain["datasets"]["d"]["methods"])
    assert not any("learned fusion" in t["b"] for t in plain["datasets"]["d"]["significance"])
    changed = Study(dataclasses.replace(config, fusion={"rows": 12, "k": 5, "grid": TINY_GRID})).plan()
    assert [stage.what.split(" (")[0] for stage in changed] == ["learned fusion of tallrec on d"]  # only the fit

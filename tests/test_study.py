"""Studies and the demo: config validation, the grid, and a tiny end-to-end run that resumes."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from tca4rec.cli import main
from tca4rec.errors import ConfigError
from tca4rec.study.config import StudyConfig
from tca4rec.study.runner import INITIAL_RATES, Stage, Study, load_study


def config(**overrides):
    base = dict(name="t", out="out", datasets={"d": "data"}, grid=[{"host": ["tallrec"], "cf": ["sasrec"],
                                                                    "alpha": [0, 0.1]}])
    return StudyConfig(**{**base, **overrides})


def test_host_alone_is_shared_across_cf_series():
    cfg = config(grid=[{"host": ["tallrec"], "cf": ["sasrec", "gru4rec"], "alpha": [0, 0.1]},
                       {"host": ["llara"], "cf": ["sasrec"], "alpha": [0]}], seeds=[0, 1])
    cells = cfg.llm_cells()
    alone = [c for c in cells if c.host == "tallrec" and c.alpha == 0]
    assert len(alone) == 2 and all(c.cf is None for c in alone)  # one per seed, not per CF model
    assert len([c for c in cells if c.host == "tallrec" and c.alpha > 0]) == 4
    assert [c.cf for c in cells if c.host == "llara"] == ["sasrec", "sasrec"]  # llara always reads its CF
    assert {c.model for c in cfg.cf_cells()} == {"sasrec", "gru4rec"}


@pytest.mark.parametrize("bad, message", [
    (dict(grid=[{"host": ["nope"], "cf": ["sasrec"], "alpha": [0]}]), "unknown host"),
    (dict(grid=[{"host": ["tallrec"], "cf": ["nope"], "alpha": [0]}]), "unknown CF model"),
    (dict(grid=[{"host": ["tallrec"], "cf": ["sasrec"], "alpha": [1.5]}]), "not in"),
    (dict(train={"learning_rate": 1}), "unknown option"),
    (dict(eval_limit=0), "eval_limit"),
    (dict(cf_lookahead="mean"), "cf_lookahead"),
])
def test_bad_study_configs_name_the_field(bad, message):
    with pytest.raises(ConfigError, match=message):
        Study(config(**bad))  # the CF model names are checked against the zoo when the study is built


@pytest.mark.parametrize("line, message", [
    ("seeds: [zero]", "field 'seeds\\[0\\]': 'zero' is not an integer"),
    ("cf: abc", "field 'cf': 'abc' is not a mapping"),
    ("train: {max_steps: abc}", "field 'train.max_steps': 'abc' is not an integer or null"),
    ("eval_limit: four", "field 'eval_limit': 'four' is not an integer or null"),
    ("beams: ten", "field 'beams': 'ten' is not an integer"),
    ("labels: [x]", "field 'labels': \\['x'\\] is not a mapping"),
    ("betas: [.inf]", "field 'betas\\[0\\]': inf is not a finite number"),
    ("beta_tuning: {rows: 5, grid: [0, .nan]}", "field 'beta_tuning.grid\\[1\\]'"),
    ("cf: {epochs: many}", "field 'cf.epochs': 'many' is not an integer"),
    ("cf: {hidden_size: big}", "field 'cf.hidden_size': 'big' is not an integer"),
    ("cf: {dropout: 3}", "options of sasrec.*dropout"),
    ("datasets: {d: {synthetic: {num_items: lots}}}", "field 'datasets.d.synthetic.num_items'"),
    ("train: {lora_targets: q_proj}", "field 'train.lora_targets'"),
    ('datasets: {"../../escape": data}', "field 'datasets \\(key '../../escape'\\)': '../../escape' is not a plain"),
    ("name: ../../evil", "field 'name': '../../evil' is not a plain name"),
    ("grid: [{host: [tallrec], cf: [../sasrec], alpha: [0.1]}]", "field 'grid\\[0\\].cf': '../sasrec' is not a plain"),
    ("grid: [{host: [tallrec], cf: [sasrec], alpha: []}]", "field 'grid\\[0\\].alpha': an empty list"),
    ("grid: [{host: [], cf: [sasrec]}]", "field 'grid\\[0\\].host': an empty list"),
    ("cf: {epochs: -1}", "field 'cf' \\(options of sasrec\\): need epochs in 0\\.\\.100,000"),
    ("cf: {num_heads: 3}", "field 'cf' \\(options of sasrec\\): num_heads 3 must divide hidden_size 64"),
    ("seeds: [0, -1]", "field 'seeds\\[1\\]': -1 is not a seed"),
    ("eval_sample_seed: -3", "field 'eval_sample_seed': -3 is not a seed"),
    ("betas: [0, 1.0e+308]", "field 'betas\\[1\\]': 1e\\+308 is not a finite number in \\[0, 10,000,000\\]"),
    ("beta_tuning: {rows: 5, grid: [0, 1.0e+8]}", "field 'beta_tuning.grid\\[1\\]': 100000000.0 is not a finite"),
])
def test_a_study_file_of_wrong_types_names_file_field_and_value_before_anything_is_made(tmp_path, line, message):
    text = "name: x\nout: o\ndatasets: {d: data}\ngrid: [{host: [tallrec], cf: [sasrec], alpha: [0, 0.1]}]\n"
    key = line.split(":")[0]
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(key + ":")) + "\n" + line + "\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_study(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing created


def test_a_missing_dataset_folder_is_refused_before_the_study_folder_is_made(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nout: o\ndatasets: {d: no_such_data}\ngrid: [{host: [tallrec]}]\n")
    with pytest.raises(ConfigError, match="field 'datasets.d': .*no_such_data"):
        load_study(path).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing created


def test_saved_config_names_the_lookahead_only_when_it_is_max(tmp_path):
    from tca4rec.study.runner import _config_record

    assert "cf_lookahead" not in _config_record(config(base=str(tmp_path)))  # saved studies stay as they were
    assert _config_record(config(base=str(tmp_path), cf_lookahead="max"))["cf_lookahead"] == "max"


def test_study_yaml_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nout: o\ndatasets: {d: data}\ngrid: [{host: [tallrec]}]\nseedz: [1]\n")
    with pytest.raises(ConfigError, match="unknown field"):
        load_study(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(path)
    deep = "[" * 3000 + "]" * 3000  # past the YAML reader's recursion: a one-line error, not a RecursionError
    path.write_text(f"name: x\nout: o\ndatasets: {{d: data}}\ngrid: {deep}\n")
    with pytest.raises(ConfigError, match="nested too deeply to read"):
        load_study(path)
    path.write_text("name: x\nout: o\ndatasets: {d: data}\ngrid: [{host: [tallrec]}]\n")
    with pytest.raises(ConfigError, match=r"--set eval_limit=\.\.\.: value nested too deeply"):
        load_study(path, [f"eval_limit={deep}"])


def test_time_left_uses_the_rates_measured_on_the_same_dataset():
    study = Study(config(datasets={"a": "a", "b": "b"}))
    steps_a, steps_b = (Stage("fine-tune", "llm_step", d, 40, lambda: None) for d in "ab")
    assert study.estimate(steps_b) == 40 * INITIAL_RATES["llm_step"]  # nothing measured yet: the prior
    study._measured("llm_step", "a", 200.0, 40)  # 5 s per step on a
    assert study.estimate(steps_a) == study.estimate(steps_b) == 200.0  # b falls back to a's rate
    study._measured("llm_step", "b", 320.0, 40)  # 8 s per step on b
    assert (study.estimate(steps_a), study.estimate(steps_b)) == (200.0, 320.0)
    rows_a = Stage("evaluate", "eval_row", "a", 50, lambda: None)
    assert study.estimate(rows_a) == 50 * INITIAL_RATES["eval_row"]  # other kinds keep their own rates


def test_tiny_demo_end_to_end_then_resume_and_report(tmp_path, tiny_llm_dir, capsys):
    from tca4rec.study.config import DemoConfig
    from tca4rec.study.demo import run_demo

    logs: list[str] = []
    cfg = DemoConfig(out=str(tmp_path / "demo"), llm=str(tiny_llm_dir), train_limit=16, max_steps=2,
                     test_limit=8, cf_epochs=1, guided=False)
    report = run_demo(cfg, log=logs.append)
    text = (report / "report.md").read_text()
    for label in ("| SASRec |", "| LLM |", "| LLM + TCA4Rec |"):
        assert label in text
    assert "Paired bootstrap" in text and ("not significant" in text or "**significant**" in text)
    results = json.loads((report / "results.json").read_text())
    methods = {m["method"]: m for m in results["datasets"]["synthetic"]["methods"]}
    assert set(methods) == {"SASRec", "LLM", "LLM + TCA4Rec"}
    assert all(m["rows"] == 8 for m in methods.values())  # the same held-out rows for every method
    for png in results["datasets"]["synthetic"]["plots"]:
        assert (report / png).stat().st_size > 1000
    assert any("fine-tune" in line for line in logs)

    logs.clear()
    run_demo(cfg, log=logs.append)  # everything is finished: nothing is trained again
    assert not any("fine-tune" in line or "CF " in line for line in logs)

    logs.clear()  # fewer test rows: every cell is evaluated again, nothing is retrained
    report = run_demo(dataclasses.replace(cfg, test_limit=6), log=logs.append)
    assert not any("fine-tune" in line for line in logs)
    assert sum("] CF " in line or "] evaluate " in line for line in logs) == 3  # SASRec and both LLM runs
    results = json.loads((report / "results.json").read_text())
    assert all(m["rows"] == 6 for m in results["datasets"]["synthetic"]["methods"])

    assert main(["report", str(tmp_path / "demo")]) == 0
    assert "report folder" in capsys.readouterr().out
    (report / "report.md").unlink()  # a study file is read like its folder: the report is written again
    assert main(["report", str(tmp_path / "demo" / "study.yaml")]) == 0
    assert "report folder" in capsys.readouterr().out and (report / "report.md").is_file()
    state = tmp_path / "demo" / "synthetic" / "llm" / "tallrec-nocf-a0-s0" / "train_state.json"
    kept = state.read_bytes()
    for damaged in (b"\xff", b'{"global_step": "many"}', b"[]"):  # a report of a damaged cell: one line naming it
        state.write_bytes(damaged)
        assert main(["report", str(tmp_path / "demo")]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{state} is not a training state" in err and "\n" not in err, err
    state.write_bytes(kept)

    # New training settings on the finished folder: refused with what changed, nothing rewritten.
    saved = (tmp_path / "demo" / "study.yaml").read_text()
    assert main(["study", str(tmp_path / "demo"), "--set", "train.max_steps=3", "--set", "train.lr=0.01",
                 "--set", "cf.epochs=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_steps 2 -> 3" in err and "lr 0.0005 -> 0.01" in err
    assert "epochs 1 -> 5" in err and "its CF teacher" in err and "--rerun-changed" in err
    assert (tmp_path / "demo" / "study.yaml").read_text() == saved

    logs.clear()  # --guided adds CF-guided decodings of both runs, beta tuned on valid rows, no retraining
    report = run_demo(dataclasses.replace(cfg, test_limit=6, guided=True, beta_rows=4), log=logs.append)
    assert not any("fine-tune" in line for line in logs)
    assert sum(line.startswith("beta for ") for line in logs) == 2
    results = json.loads((report / "results.json").read_text())
    methods = [m["method"] for m in results["datasets"]["synthetic"]["methods"]]
    guided = [m for m in methods if "CF-guided decoding" in m and "tuned on valid" in m]
    assert len(methods) == 5 and len(guided) == 2
    assert {m.split(" + CF-guided")[0] for m in guided} == {"LLM", "LLM + TCA4Rec"}
    for run in ("tallrec-nocf-a0-s0", "tallrec-sasrec-a0.1-s0"):
        tuning = json.loads((tmp_path / "demo" / "synthetic" / "llm" / run / "beta_tuning_max.json").read_text())
        assert tuning["rows"] == 4 and tuning["best_beta"] in (0, 2, 8, 32)

    # A finished folder kept without its weights (as docs/results keeps one in git) needs nothing again...
    guided = dataclasses.replace(cfg, test_limit=6, guided=True, beta_rows=4)
    demo = tmp_path / "demo"
    for weights in [*demo.rglob("checkpoints"), *demo.rglob("adapter"), *demo.rglob("model.safetensors")]:
        if weights.exists():  # an adapter inside a removed checkpoint is gone already
            shutil.rmtree(weights) if weights.is_dir() else weights.unlink()
    logs.clear()
    run_demo(guided, log=logs.append)
    assert not any("fine-tune" in line or "] CF " in line or "] evaluate " in line for line in logs)
    # ...while an unfinished cell gets its teacher trained again, then is fine-tuned itself
    (demo / "synthetic" / "llm" / "tallrec-sasrec-a0.1-s0" / "metrics_test.json").unlink()
    logs.clear()
    run_demo(guided, log=logs.append)
    assert sum("] CF " in line for line in logs) == 1
    fine_tuned = [line for line in logs if "] fine-tune" in line]
    assert len(fine_tuned) == 1 and "TCA4Rec" in fine_tuned[0]
    assert (demo / "synthetic" / "cf" / "sasrec-s0" / "model.safetensors").is_file()


def test_overrides_replace_fields_and_only_names_real_cells(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nout: o\ndatasets: {d: data}\ngrid: [{host: [tallrec], cf: [sasrec], alpha: [0, 0.1]}]\n"
                    "train: {lr: 0.001}\n")
    study = load_study(path, ["train.max_minutes=2.5", "eval_limit=null", "beams=12"])
    assert study.config.train == {"lr": 0.001, "max_minutes": 2.5}
    assert study.config.eval_limit is None and study.config.beams == 12
    for bad, message in (("novalue", "KEY=VALUE"), ("name.x=1", "not a mapping"), ("beams=[1", "not valid YAML")):
        with pytest.raises(ConfigError, match=message):
            load_study(path, [bad])
    with pytest.raises(ConfigError, match="not a cell of this study"):
        study.plan(only=["d/llm/msl-nocf-a0-s0"])
    with pytest.raises(ConfigError, match="needs every LLM cell"):
        study.run(jobs=1, finish_within=60)


def test_cells_run_in_parallel_processes_with_one_time_budget(tmp_path, tiny_llm_dir):
    """--jobs runs the CF cell, then both LLM cells as separate `study --only` processes that
    share one training budget; --stage splits training from decoding; the report states what
    each cell trained."""
    path = tmp_path / "s.yaml"
    path.write_text(f"""name: par
out: out
datasets: {{synthetic: {{synthetic: {{num_items: 120, num_users: 80, seed: 1}}}}}}
eval_limit: 6
cf: {{epochs: 1}}
train: {{llm: {tiny_llm_dir}, train_limit: 8, max_steps: 2, batch_size: 4, grad_accum: 1, eval_rows: 0,
        save_steps: 1, logging_steps: 1}}
grid: [{{host: [tallrec], cf: [sasrec], alpha: [0, 0.1]}}]
betas: [0, 1, auto]
beta_tuning: {{rows: 4, grid: [0, 1]}}
""")
    logs: list[str] = []
    study = load_study(path)
    study.log = logs.append
    assert study.run(jobs=2, finish_within=900, eval_reserve=10, stage="train") is None
    assert sum(line.startswith("started ") for line in logs) == 2
    assert any("trains for at most" in line for line in logs)
    cells = study.config.llm_cells()
    assert all((study.out / c.folder / "adapter").is_dir() for c in cells)
    assert not any((study.out / c.folder / "metrics_test.json").exists() for c in cells)  # trained, not decoded

    logs.clear()  # the decoding stage, in this process: nothing is trained again
    report = study.run(stage="evaluate")
    assert not any("fine-tune" in line for line in logs)
    # Each cell: plain decoding, CF-guided at beta 1, and at the beta tuned on 4 valid rows.
    assert sum("] evaluate " in line for line in logs) == 6
    assert sum(line.startswith("beta for ") for line in logs) == 2
    text = (report / "report.md").read_text()
    assert "Training actually done" in text and "MDE80" in text
    assert text.count("evaluated: the last step (no model selection)") == 2  # eval_rows 0: no best checkpoint
    assert text.count("+ CF-guided decoding (β=1)") >= 2 and "tuned on valid" in text
    # Each fused row against the same run decoded plainly and against the CF model that guided it;
    # guided TCA4Rec against the guided host alone at the same beta setting.
    tests = json.loads((report / "results.json").read_text())["datasets"]["synthetic"]["significance"]
    pairs = {(t["a"], t["b"]) for t in tests}
    fused = {t["b"] for t in tests if "CF-guided" in t["b"]}
    assert len(fused) == 4
    for label in fused:
        assert (label.split(" + CF-guided")[0], label) in pairs and ("SASRec", label) in pairs
    for beta in ("β=1)", "tuned on valid)"):
        host, tca = sorted((label for label in fused if label.endswith(beta)), key=lambda lab: "TCA4Rec" in lab)
        assert (host, tca) in pairs and "TCA4Rec" in tca and "TCA4Rec" not in host
    assert len(tests) == 4 * (1 + 4 * 2 + 2)  # NDCG/HR x all/novel, per pair: TCA, 4 fused x 2, 2 guided TCA
    for cell in study.config.llm_cells():  # the teacher of the TCA cell, SASRec for the host alone too
        assert study.guide_cf_run(cell) == study.out / "synthetic/cf/sasrec-s0"
        assert json.loads((study.out / cell.folder / "metrics_test_beta1.json").read_text())["rows"] == 6
    assert load_study(path).plan() == []  # everything, guided decodings included, is done
    for cell in study.config.llm_cells():
        run = study.out / cell.folder
        stored = json.loads((run / "config.json").read_text())["config"]
        assert stored["budget_eval_rows"] == 0 and 14 < stored["max_minutes"] < 15  # train stage: no decoding
        assert json.loads((run / "metrics_test.json").read_text())["rows"] == 6
        assert (study.out / "logs" / (cell.folder.replace("/", "__") + ".log")).is_file()


def test_rerun_changed_replaces_exactly_the_changed_cells_and_their_dependents(tmp_path):
    study = Study(config(out=str(tmp_path / "out"), train={"lr": 0.001}, cf={"epochs": 3}))
    cells = {c.folder: c for c in [*study.config.cf_cells(), *study.config.llm_cells()]}
    for folder, cell in cells.items():  # finished cells, as the runner records them
        run = study.out / folder
        run.mkdir(parents=True)
        if "/cf/" in folder:
            cf, limit = study._cf_settings(cell)
            record = {"model": "sasrec", "config": dataclasses.asdict(cf), "limit": limit,
                      "dataset": {"num_items": 1, "num_users": 1}}
        else:
            record = {"format": "tca4rec.llm_run/1", "config": dataclasses.asdict(study._train_config(cell))}
        (run / "config.json").write_text(json.dumps(record))
        (run / "metrics_test.json").write_text("{}")
    assert study.changed_cells() == {}
    lr_only = Study(config(out=str(tmp_path / "out"), train={"lr": 0.01}, cf={"epochs": 3}))
    assert set(lr_only.changed_cells()) == {c for c in cells if "/llm/" in c}
    teacher = Study(config(out=str(tmp_path / "out"), train={"lr": 0.001}, cf={"epochs": 4}))
    changed = teacher.changed_cells()
    assert set(changed) == {"d/cf/sasrec-s0", "d/llm/tallrec-sasrec-a0.1-s0"}  # the host alone reads no CF model
    with pytest.raises(ConfigError, match="epochs 3 -> 4"):
        teacher._refuse_or_clear_changed(rerun_changed=False)
    (study.out / "d" / "llm" / "tallrec-nocf-a0-s0" / "notes.txt").write_text("mine")  # in an unchanged cell
    teacher._refuse_or_clear_changed(rerun_changed=True)
    assert not (study.out / "d" / "cf" / "sasrec-s0").exists()
    assert not (study.out / "d" / "llm" / "tallrec-sasrec-a0.1-s0").exists()
    assert (study.out / "d" / "llm" / "tallrec-nocf-a0-s0" / "notes.txt").read_text() == "mine"


def test_a_study_run_twice_at_once_is_refused_before_anything_is_made(tmp_path, synth_dir):
    from tca4rec.errors import RunError
    from tca4rec.io import exclusive_use

    path = tmp_path / "s.yaml"
    path.write_text(f"name: x\nout: o\ndatasets: {{d: {synth_dir}}}\ngrid: [{{host: [tallrec]}}]\n")
    study = load_study(path)
    with exclusive_use(study.out, "study"):
        with pytest.raises(RunError, match="o is in use: another tca4rec process .* is running study on it"):
            study.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]

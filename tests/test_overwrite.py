"""``--overwrite`` replaces only what the project wrote: a person's files are never deleted.

Reproductions of the hostile-user cases (a folder of notes, a regular file, a copy of a
dataset given as ``--out``), and a property test over random folder contents.
"""

from __future__ import annotations

import shutil
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tca4rec.cf import train_cf
from tca4rec.cf.run import CF_RUN_FILES
from tca4rec.cli import main
from tca4rec.errors import RunError
from tca4rec.io import check_own_folder, remove_own_folder


def snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def cf_train(synth_dir, out, *extra):
    return main(["cf", "train", "--data", str(synth_dir), "--model", "mostpop", "--out", str(out), "--quiet", *extra])


def test_a_folder_of_notes_survives_cf_train_overwrite(synth_dir, tmp_path, capsys):
    user = tmp_path / "userdir"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("precious")
    before = snapshot(user)
    assert cf_train(synth_dir, user, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.txt" in err and "refusing to delete" in err
    assert snapshot(user) == before


def test_a_file_or_a_dataset_copy_as_out_is_refused(synth_dir, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("precious")
    for extra in (("--overwrite",), ()):  # without it, the file was called "run folder afile exists"
        assert cf_train(synth_dir, afile, *extra) == 2
        assert "is a file, not a run folder" in capsys.readouterr().err and afile.read_text() == "precious"
    copy = tmp_path / "data_copy"
    shutil.copytree(synth_dir, copy)
    before = snapshot(copy)
    assert cf_train(synth_dir, copy, "--overwrite") == 2
    assert "item.csv" in capsys.readouterr().err and snapshot(copy) == before


def test_a_run_the_project_wrote_is_replaced(synth_dir, tmp_path):
    run = tmp_path / "run"
    assert cf_train(synth_dir, run) == 0
    assert main(["cf", "evaluate", "--run", str(run), "--data", str(synth_dir), "--split", "test"]) == 0
    assert cf_train(synth_dir, run, "--overwrite") == 0  # its metrics and predictions are the project's too
    assert (run / "model.safetensors").is_file() and not (run / "metrics_test.json").exists()


OWN = ["config.json", "model.safetensors", "train_log.jsonl", "metrics_valid.json", "predictions_test.jsonl",
       ".config.json.x1y2.tmp"]
FOREIGN = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and not n.startswith(("metrics_", "predictions_")) and n not in OWN
    and not (n.startswith(".") and n.endswith(".tmp")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(own=st.lists(st.sampled_from(OWN), unique=True), foreign=st.lists(FOREIGN, min_size=1, max_size=3, unique=True),
       as_dirs=st.booleans())
def test_a_folder_with_anything_foreign_is_never_deleted(tmp_path_factory, own, foreign, as_dirs):
    folder = tmp_path_factory.mktemp("run")
    for name in own:
        (folder / name).write_text("ours")
    for name in foreign:
        target = folder / name
        if as_dirs:
            target.mkdir()
            (target / "inside").write_text("theirs")
        else:
            target.write_text("theirs")
    before = snapshot(folder)
    with pytest.raises(RunError, match="refusing to delete"):
        remove_own_folder(folder, CF_RUN_FILES, "tca4rec CF run")
    assert snapshot(folder) == before


def test_only_the_project_files_is_removable(tmp_path):
    for name in OWN:
        (tmp_path / name).write_text("ours")
    check_own_folder(tmp_path, CF_RUN_FILES, "tca4rec CF run")
    remove_own_folder(tmp_path, CF_RUN_FILES, "tca4rec CF run")
    assert not tmp_path.exists()


def test_train_cf_refuses_a_folder_that_only_looks_like_a_run(synth_dataset, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text('{"some": "other tool"}')
    with pytest.raises(RunError, match="not a tca4rec CF run folder"):
        train_cf(synth_dataset, "mostpop", fake, overwrite=True, progress=False)
    assert (fake / "config.json").read_text() == '{"some": "other tool"}'


def outputs(synth_dir, run):
    """Every command output option outside the run folders, as (argv without the path, what it writes)."""
    return [
        (["bench", "align", "--data", str(synth_dir), "--batch", "1", "--repeats", "1", "--out"], "file"),
        (["bench", "serve", "http://127.0.0.1:9", "--requests", "1", "--out"], "file"),
        (["report", str(run), "--data", str(synth_dir), "--out"], "folder"),
        (["cf", "sweep", "--data", str(synth_dir), "--model", "mostpop", "--quiet", "--out"], "folder"),
    ]


def test_every_output_option_refuses_what_a_person_put_there(synth_dir, tmp_path, capsys):
    """One rule (``tca4rec.io.check_output``) before any work: a person's file or folder is never replaced."""
    run = tmp_path / "pop"
    assert cf_train(synth_dir, run) == 0
    assert main(["cf", "evaluate", "--run", str(run), "--split", "test"]) == 0
    precious_file = tmp_path / "precious.json"
    precious_file.write_text('{"mine": 1}')
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("precious")
    before = snapshot(tmp_path)
    for argv, kind in outputs(synth_dir, run):
        for target in (precious_file, notes):
            capsys.readouterr()
            assert main([*argv, str(target)]) == 2, argv
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and str(target) in err and "did not write" in err, err
    assert snapshot(tmp_path) == before

"""Offline batch scoring (``tca4rec recommend --histories``): answers, bad rows, resuming after a kill, torchrun."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tca4rec.cli import main
from tca4rec.errors import ConfigError, DatasetError, RunError
from tca4rec.llm.recommend import recommend
from tca4rec.llm.recommend_file import recommend_file

REPO = Path(__file__).resolve().parents[2]
ROWS = 30


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def same_records(got: list[dict], expected: list[dict]) -> None:
    assert [(r["row"], r["user"], r["items"], r["titles"]) for r in got] == \
           [(r["row"], r["user"], r["items"], r["titles"]) for r in expected]
    np.testing.assert_allclose([r["scores"] for r in got], [r["scores"] for r in expected], rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def run_dir(small_config, tmp_path_factory) -> Path:
    from tca4rec.llm.train import train

    return train(small_config(tmp_path_factory.mktemp("batch") / "run"))


@pytest.fixture(scope="module")
def users(synth_dataset) -> list[dict]:
    """Test-split histories, every other one given as titles: {"user", "history"} records."""
    test = synth_dataset.split("test")
    records = []
    for r in range(ROWS):
        ids = test.history(r)
        history = [synth_dataset.titles[i] for i in ids] if r % 2 else ids
        records.append({"user": f"u{int(test.users[r])}-{r}", "history": history})
    return records


@pytest.fixture(scope="module")
def histories(users, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("histories") / "users.jsonl"
    path.write_text("".join(json.dumps(u) + "\n" for u in users))
    return path


@pytest.fixture(scope="module")
def reference_file(run_dir, histories, tmp_path_factory) -> Path:
    """``recommend_file`` of ``histories`` with k 3 in batches of 2 (and its ``.meta.json`` beside it)."""
    out = tmp_path_factory.mktemp("reference") / "recs.jsonl"
    summary = recommend_file(run_dir, histories, out, k=3, batch_size=2)
    assert summary == {"out": str(out), "rows": ROWS, "decoded": ROWS, "resumed_after": 0, "bad_rows": 0,
                       "bad_rows_file": None}
    return out


@pytest.fixture(scope="module")
def reference(reference_file) -> list[dict]:
    return lines(reference_file)


def copy_meta(reference_file: Path, out: Path) -> None:
    """The settings record of the reference run, for ``out`` (the same input and settings)."""
    meta = reference_file.with_name(reference_file.name + ".meta.json")
    out.with_name(out.name + ".meta.json").write_text(meta.read_text())


def test_each_line_is_recommends_answer(reference, users, run_dir):
    from tca4rec.llm.run import load_llm_run

    run = load_llm_run(run_dir)
    assert [r["row"] for r in reference] == list(range(1, ROWS + 1))
    for record, user in zip(reference[:8], users):
        expected = recommend(run_dir, user["history"], k=3, run=run)
        assert record["user"] == user["user"] and record["items"] == [r.item_id for r in expected]
        assert record["titles"] == [r.title for r in expected]
        np.testing.assert_allclose(record["scores"], [r.score for r in expected], rtol=1e-5, atol=1e-4)


def test_csv_input_through_the_cli(reference, users, run_dir, tmp_path, capsys):
    path = tmp_path / "users.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "history"])
        writer.writerows([u["user"], json.dumps(u["history"])] for u in users)
    out = tmp_path / "recs.jsonl"
    assert main(["recommend", "--run", str(run_dir), "--histories", str(path), "--out", str(out), "--k", "3",
                 "--batch-size", "4"]) == 0
    same_records(lines(out), reference)
    assert f"wrote the top 3 of {ROWS} users" in capsys.readouterr().out


def test_bad_rows_stop_the_run_or_are_listed(run_dir, synth_dataset, tmp_path, capsys):
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join([
        json.dumps({"user": "a", "history": [1, 2]}),
        "",  # blank: skipped
        json.dumps({"user": "b", "history": [synth_dataset.titles[3], "No Such Toy"]}),
        json.dumps({"user": "c", "history": [4]}),
        '{"user": "d", "history": [5]',
        json.dumps({"user": "e", "history": []}),
        json.dumps({"history": [6]}),
        json.dumps({"user": 7, "history": [7, 99999]}),
        json.dumps({"user": 8, "history": [8]}),
        '{"user": "f", "history": ' + "[" * 5000 + "]" * 5000 + "}",  # past Python's JSON depth
    ]) + "\n")
    out = tmp_path / "recs.jsonl"
    args = ["recommend", "--run", str(run_dir), "--histories", str(path), "--out", str(out), "--k", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Loading weights" not in err  # the input is checked before the model loads
    assert err.startswith(f"error: {path}, row 3, field 'history[1]': 'No Such Toy' is not a catalog title")
    assert "\n" not in err and not out.exists()
    with pytest.raises(DatasetError, match="row 3"):
        recommend_file(run_dir, path, out, k=2)

    bad = tmp_path / "bad.jsonl"
    assert main(args + ["--skip-bad-rows", str(bad)]) == 0
    assert [(b["row"], b["field"]) for b in lines(bad)] == [(3, "history[1]"), (5, None), (6, "history"),
                                                            (7, "user"), (8, "history[1]"), (10, None)]
    assert all("\n" not in b["error"] for b in lines(bad))
    assert "nested too deeply" in lines(bad)[-1]["error"]
    assert [(r["row"], r["user"]) for r in lines(out)] == [(1, "a"), (4, "c"), (9, 8)]
    assert "6 bad row(s) skipped" in capsys.readouterr().out


def test_a_history_cell_nested_too_deeply_is_a_bad_row(synth_dataset, tmp_path):
    from tca4rec.llm.histories import read_histories
    from tca4rec.llm.recommend import Catalog

    path = tmp_path / "users.csv"
    path.write_text("user,history\na,[1]\nb," + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DatasetError, match=r"row 2, field 'history': .* is not a JSON list \(nested too deeply"):
        read_histories(path, Catalog(synth_dataset.titles), 10)


def test_a_byte_order_mark_is_not_part_of_the_first_row(synth_dataset, tmp_path):
    """Excel's "CSV UTF-8" and PowerShell write one: it was a column '\ufeffuser' or a JSON error on row 1."""
    from tca4rec.llm.histories import read_histories
    from tca4rec.llm.recommend import Catalog

    catalog = Catalog(synth_dataset.titles)
    history = [synth_dataset.titles[2], 5]
    for name in ("users.csv", "users.jsonl"):
        plain, marked = tmp_path / name, tmp_path / f"bom-{name}"
        with plain.open("w", newline="") as f:
            if name.endswith(".csv"):
                csv.writer(f).writerows([["user", "history"], ["a", json.dumps(history)]])
            else:
                f.write(json.dumps({"user": "a", "history": history}) + "\n")
        marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
        expected, _ = read_histories(plain, catalog, 10)
        assert len(expected) == 1
        assert read_histories(marked, catalog, 10) == (expected, []), name


def test_resume_keeps_complete_lines_and_drops_a_partial_one(reference_file, reference, run_dir, histories, tmp_path):
    """As a kill leaves it: two complete lines (the first marked, to show it is not decoded again) and half a line."""
    out = tmp_path / "recs.jsonl"
    copy_meta(reference_file, out)
    marked = {**reference[0], "scores": [0.0, 0.0, 0.0]}
    third = json.dumps(reference[2])
    out.write_text(json.dumps(marked) + "\n" + json.dumps(reference[1]) + "\n" + third[:len(third) // 2])
    summary = recommend_file(run_dir, histories, out, k=3, batch_size=2)
    assert (summary["resumed_after"], summary["decoded"]) == (2, ROWS - 2)
    got = lines(out)
    assert got[0] == marked
    same_records(got[1:], reference[1:])


def test_a_moved_run_and_input_resume(reference_file, reference, run_dir, histories, tmp_path):
    """The record names the input and the run by content: copies elsewhere (new paths, new times)
    resume the file; an input with one more row is refused."""
    import shutil

    moved_run, moved_input = tmp_path / "moved" / "run", tmp_path / "moved" / "users.jsonl"
    shutil.copytree(run_dir, moved_run, ignore=shutil.ignore_patterns("checkpoints"))
    moved_input.write_bytes(histories.read_bytes())
    out = tmp_path / "recs.jsonl"
    copy_meta(reference_file, out)
    out.write_text("".join(json.dumps(r) + "\n" for r in reference[:2]))
    summary = recommend_file(moved_run, moved_input, out, k=3, batch_size=2)
    assert (summary["resumed_after"], summary["decoded"]) == (2, ROWS - 2)
    same_records(lines(out), reference)
    longer = tmp_path / "longer.jsonl"
    longer.write_bytes(histories.read_bytes() + histories.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(ConfigError, match="another histories_sha256"):
        recommend_file(moved_run, longer, out, k=3, batch_size=2)


def test_a_file_from_other_settings_is_refused(reference_file, run_dir, histories, tmp_path):
    out = tmp_path / "recs.jsonl"
    out.write_bytes(reference_file.read_bytes())
    copy_meta(reference_file, out)
    with pytest.raises(ConfigError, match="another k"):
        recommend_file(run_dir, histories, out, k=2)
    assert out.read_bytes() == reference_file.read_bytes()
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"something": "else"}\n')
    with pytest.raises(RunError, match="--out .*did not write"):
        recommend_file(run_dir, histories, foreign, k=3)
    assert foreign.read_text() == '{"something": "else"}\n'  # never overwritten


def test_a_persons_file_given_as_skip_bad_rows_is_refused_before_anything_runs(run_dir, tmp_path, capsys):
    """The hostile case of issue 36: ``--skip-bad-rows precious.jsonl`` used to replace the file."""
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"user": "a", "history": ["No Such Toy"]}) + "\n")
    precious = tmp_path / "precious.jsonl"
    precious.write_text("precious\n")
    out = tmp_path / "o.jsonl"
    args = ["recommend", "--run", str(run_dir), "--histories", str(path), "--out", str(out)]
    assert main([*args, "--skip-bad-rows", str(precious)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--skip-bad-rows" in err and str(precious) in err and "\n" not in err
    assert precious.read_text() == "precious\n" and not out.exists()
    for same in (out, path):  # nor may it be the output or the input
        with pytest.raises(ConfigError, match="the same file"):
            recommend_file(run_dir, path, out, skip_bad_rows=same)


def test_a_folder_given_as_histories_is_named_a_folder(run_dir, tmp_path):
    with pytest.raises(DatasetError, match="a folder, not a histories file"):
        recommend_file(run_dir, tmp_path, tmp_path / "o.jsonl")


def test_a_finished_file_and_an_input_with_no_good_row(reference_file, reference, run_dir, histories, tmp_path):
    """Run again when every row is written: nothing is decoded and the file stays as it is (this
    crashed with UnboundLocalError); an input whose rows are all bad gives an empty output and the
    list; an input without rows is refused before the model loads."""
    out = tmp_path / "recs.jsonl"
    out.write_bytes(reference_file.read_bytes())
    copy_meta(reference_file, out)
    summary = recommend_file(run_dir, histories, out, k=3, batch_size=2)
    assert (summary["resumed_after"], summary["decoded"]) == (ROWS, 0)
    assert out.read_bytes() == reference_file.read_bytes()

    all_bad, none = tmp_path / "all_bad.jsonl", tmp_path / "none.jsonl"
    all_bad.write_text(json.dumps({"user": "a", "history": [99999]}) + "\n")
    summary = recommend_file(run_dir, all_bad, tmp_path / "o.jsonl", k=2, skip_bad_rows=tmp_path / "bad.jsonl")
    assert (summary["rows"], summary["bad_rows"]) == (0, 1) and (tmp_path / "o.jsonl").read_text() == ""
    none.write_text("\n  \n")
    with pytest.raises(DatasetError, match="no histories in it"):
        recommend_file(run_dir, none, tmp_path / "o2.jsonl", k=2)
    assert not (tmp_path / "o2.jsonl").exists()


def test_sigkill_then_resume(reference, run_dir, histories, tmp_path):
    out = tmp_path / "recs.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tca4rec.cli", "recommend", "--run", str(run_dir), "--histories",
                             str(histories), "--out", str(out), "--k", "3", "--batch-size", "2"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # (batches of 2 as in the reference, so that the two files agree row for row)
    deadline = time.monotonic() + 300  # a bound on a broken start, not a timing assertion
    while not (out.is_file() and out.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "ended before writing its first batch"
        time.sleep(0.005)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_bytes().count(b"\n")
    assert 1 <= written < ROWS
    summary = recommend_file(run_dir, histories, out, k=3, batch_size=2)
    assert summary["resumed_after"] == written
    same_records(lines(out), reference)


@pytest.mark.slow
def test_two_processes_write_what_one_does(reference, run_dir, histories, tmp_path):
    out = tmp_path / "recs.jsonl"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tca4rec.cli",
                           "--", "recommend", "--run", str(run_dir), "--histories", str(histories), "--out", str(out),
                           "--k", "3", "--batch-size", "2"], env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    same_records(lines(out), reference)
    assert done.stdout.count("wrote the top 3") == 1  # rank 0 reports (and writes)


def test_an_output_another_process_is_writing_is_refused(run_dir, histories, tmp_path):
    from tca4rec.io import exclusive_use

    out = tmp_path / "recs.jsonl"
    with exclusive_use(out, "recommend"):
        with pytest.raises(RunError, match="recs.jsonl is in use: another tca4rec process .* is running recommend"):
            recommend_file(run_dir, histories, out, k=2, beams=2)
    assert not out.exists()  # two writers would have appended into one file

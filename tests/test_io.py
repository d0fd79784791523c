"""``tca4rec.io``: the one rule for output paths, errors that name the path the user gave."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import tca4rec.io as io
from tca4rec.errors import RunError


def test_check_output_accepts_new_paths_and_the_commands_own_output_only(tmp_path):
    bad_rows = io.jsonl_records(("row", "field", "error"))
    assert io.check_output(tmp_path / "new.jsonl", "--skip-bad-rows", bad_rows) == tmp_path / "new.jsonl"
    ours = tmp_path / "bad.jsonl"
    ours.write_text(json.dumps({"row": 3, "field": None, "error": "x"}) + "\n")
    io.check_output(ours, "--skip-bad-rows", bad_rows)
    (tmp_path / "empty.jsonl").write_text("")
    io.check_output(tmp_path / "empty.jsonl", "--skip-bad-rows", bad_rows)  # no bad rows last time
    for text in ("precious\n", '{"user": "u", "history": [1]}\n', json.dumps({"row": 1}) + "\n", "[" * 100_000):
        theirs = tmp_path / "theirs.jsonl"
        theirs.write_text(text)
        with pytest.raises(RunError, match="--skip-bad-rows .*theirs.jsonl: a file that this command did not write"):
            io.check_output(theirs, "--skip-bad-rows", bad_rows)
        assert theirs.read_text() == text
    with pytest.raises(RunError, match="a folder"):
        io.check_output(tmp_path, "--out", bad_rows)
    (tmp_path / "link").symlink_to(ours)
    with pytest.raises(RunError, match="a link"):
        io.check_output(tmp_path / "link", "--skip-bad-rows", bad_rows)
    with pytest.raises(RunError, match="a file"):  # nothing recognised: only a new path will do
        io.check_output(ours, "--out")


def test_own_folder_and_json_record(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# r")
    io.check_output(report, "--out", io.own_folder(("report.md", "*.png")))
    (report / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="a folder that this command did not write"):
        io.check_output(report, "--out", io.own_folder(("report.md", "*.png")))
    result = tmp_path / "b.json"
    result.write_text(json.dumps({"bench": "align", "x": 1}))
    io.check_output(result, "--out", io.json_record("bench", "align"))
    with pytest.raises(RunError):  # another benchmark's result is not this one's to replace
        io.check_output(result, "--out", io.json_record("bench", "decode"))
    result.write_text("[" * 100_000)  # nested past the JSON reader's depth: not ours either
    with pytest.raises(RunError, match="did not write"):
        io.check_output(result, "--out", io.json_record("bench", "align"))


def test_a_refused_write_names_the_path_not_the_hidden_temporary_file(tmp_path, monkeypatch):
    def read_only(*args, prefix="", dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}x1y2.tmp")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(io.tempfile, "mkdtemp", read_only)
    with pytest.raises(PermissionError) as err:
        io.atomic_write_json(tmp_path / "out.jsonl.meta.json", {})
    assert err.value.filename == str(tmp_path / "out.jsonl.meta.json")
    with pytest.raises(PermissionError) as err, io.atomic_dir(tmp_path / "adapter"):
        pass
    assert err.value.filename == str(tmp_path / "adapter")


@pytest.mark.parametrize("size", [0, 1000])
def test_a_safetensors_file_cut_short_is_a_run_error_naming_it(tmp_path, size):
    import torch

    whole = tmp_path / "whole.safetensors"
    io.atomic_save_tensors(whole, {"w": torch.zeros(1000)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:size])
    with pytest.raises(RunError, match=f"cannot load {cut}: not a readable safetensors file"):
        io.load_tensors(cut)
    assert io.load_tensors(whole)["w"].shape == (1000,)


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    """mkstemp and mkdtemp make private temporaries (0600 / 0700); the renamed result must read
    like a file or folder written plainly, or results would be unreadable to the group."""
    from tca4rec.io import atomic_dir, atomic_write_json

    (tmp_path / "plain.json").write_text("{}")
    (tmp_path / "plain_dir").mkdir()
    atomic_write_json(tmp_path / "atomic.json", {})
    with atomic_dir(tmp_path / "atomic_dir") as tmp:
        (tmp / "x").write_text("")
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "weights").write_text("")
        os.chmod(tmp / "sub" / "weights", 0o600)  # as safetensors writes (peft's adapter file)

    def mode(name: str) -> int:
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("atomic.json") == mode("plain.json") and mode("atomic_dir") == mode("plain_dir")
    assert mode("atomic_dir/x") == mode("atomic_dir/sub/weights") == mode("plain.json")
    assert mode("atomic_dir/sub") == mode("plain_dir")


def test_exclusive_use_refuses_a_second_holder_until_the_first_is_done(tmp_path, monkeypatch):
    run = tmp_path / "run"
    with io.exclusive_use(run, "train"):
        spelled_otherwise = tmp_path / "x" / ".." / "run"  # the same folder; the error names it as given
        with pytest.raises(RunError, match=re.escape(f"{spelled_otherwise} is in use: another tca4rec process "
                                                     f"(pid {os.getpid()}) is running train on it")):
            with io.exclusive_use(spelled_otherwise, "train"):
                pass
        with io.exclusive_use(run, "evaluate test"):  # another use of the same folder
            pass
        with io.exclusive_use(tmp_path / "other", "train"):
            pass
        monkeypatch.setenv("RANK", "1")  # torchrun's other processes run under the main one's hold
        with io.exclusive_use(run, "train"):
            pass
    monkeypatch.delenv("RANK")
    with io.exclusive_use(run, "train"):  # released when the block ended
        pass
    assert not run.exists()  # nothing is written into the output


def test_exclusive_use_is_released_when_its_process_is_killed(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, tca4rec.io as io\n"
        f"with io.exclusive_use({str(run)!r}, 'train'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"pid {holder.pid}"):
            with io.exclusive_use(run, "train"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with io.exclusive_use(run, "train"):  # no stale lock after a SIGKILL
        pass

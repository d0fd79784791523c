"""RecBole atomic-file import: same dataset as the CSV import of the same log, clear errors on bad rows."""

from __future__ import annotations

import numpy as np
import pytest

from tca4rec import cli
from tca4rec.data import load_dataset
from tca4rec.data.importer import ImportColumns, import_csv, import_recbole
from tca4rec.data.prepare import PrepareConfig
from tca4rec.errors import DatasetError

CONFIG = PrepareConfig(k_core=2)


@pytest.fixture
def run_cli(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("data",))
    return lambda *argv: cli.main([str(a) for a in argv])


def write_log(tmp_path, rng):
    """A random log written both as RecBole files and as CSV files (the CSV import is the reference)."""
    events = [(f"u{u}", f"i{i}", int(t)) for u in range(12) for i, t in
              zip(rng.choice(9, size=5, replace=False), rng.integers(1000, 2000, size=5))]
    titles = {f"i{i}": f"Toy {i % 7} box" for i in range(9)}  # i0/i7 and i1/i8 share titles: merged
    (tmp_path / "toys.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t5.0\t{t}.75\n" for u, i, t in events))
    (tmp_path / "toys.item").write_text("item_id:token\ttitle:token_seq\tbrand:token\n" + "".join(
        f"{i}\t{title}\tAcme\n" for i, title in titles.items()))
    (tmp_path / "toys.csv").write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in events))
    (tmp_path / "items.csv").write_text("item_id,title,brand\n" + "".join(f"{i},{t},Acme\n" for i, t in titles.items()))


@pytest.mark.parametrize("seed", [0, 1])
def test_recbole_import_equals_csv_import(tmp_path, seed):
    write_log(tmp_path, np.random.default_rng(seed))
    columns = ImportColumns(brand="brand")
    got = import_recbole(tmp_path / "toys.inter", tmp_path / "toys.item", columns, CONFIG)
    expected = import_csv(tmp_path / "toys.csv", tmp_path / "items.csv", columns, CONFIG)
    assert got.titles == expected.titles and got.brands == expected.brands and got.raw_ids == expected.raw_ids
    assert got.num_items < 9  # duplicate titles were merged
    for name in expected.splits:
        for field in ("users", "histories", "targets", "timestamps"):  # .75 s floored
            np.testing.assert_array_equal(getattr(got.splits[name], field), getattr(expected.splits[name], field))


@pytest.mark.parametrize("file,content,row,field,match", [
    ("toys.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1\ti2\tsoon\n", 2, "timestamp",
     "non-negative number of seconds"),
    ("toys.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1\ti2\t-3\n", 2, "timestamp",
     "non-negative"),
    ("toys.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1\ti2\n", 2, None,
     "expected 3 tab-separated fields, got 2"),
    ("toys.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\n\nu1\ti2\t6\n", 2, None,
     "expected 3 tab-separated fields, got 1"),
    ("toys.inter", "user_id:token\titem_id:token\ttime:float\nu1\ti1\t5\n", None, "timestamp",
     r"missing field\(s\) timestamp \(have: user_id, item_id, time\)"),
    ("toys.inter", "user_id,item_id,timestamp\nu1,i1,5\n", 0, None, "not NAME:TYPE"),
    ("toys.inter", "user_id:token\titem_id:tokn\ttimestamp:float\n", 0, None, "'item_id:tokn'"),
    ("toys.inter", "user_id:token\titem_id:token\ttimestamp:float\n", None, None, "no data rows"),
    ("toys.inter", "", None, None, "empty file"),
    ("toys.item", "item_id:token\tname:token_seq\ni1\tA\n", None, "title", r"missing field\(s\) title"),
    ("toys.item", "item_id:token\ttitle:token_seq\ttitle:token\ni1\tA\tB\n", 0, None, "duplicate field"),
])
def test_bad_recbole_files_name_file_row_and_field(tmp_path, file, content, row, field, match):
    (tmp_path / "toys.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\n")
    (tmp_path / "toys.item").write_text("item_id:token\ttitle:token_seq\ni1\tA\n")
    (tmp_path / file).write_text(content)
    with pytest.raises(DatasetError, match=match) as info:
        import_recbole(tmp_path / "toys.inter", tmp_path / "toys.item")
    assert (info.value.row, info.value.field) == (row, field) and file in str(info.value)


def test_non_utf8_and_missing_files(tmp_path):
    (tmp_path / "toys.inter").write_bytes(b"user_id:token\titem_id:token\ttimestamp:float\nu\xff\ti1\t5\n")
    (tmp_path / "toys.item").write_text("item_id:token\ttitle:token_seq\ni1\tA\n")
    with pytest.raises(DatasetError, match="not UTF-8") as info:
        import_recbole(tmp_path / "toys.inter", tmp_path / "toys.item")
    assert info.value.row == 1
    with pytest.raises(DatasetError, match="missing file"):
        import_recbole(tmp_path / "none.inter", tmp_path / "toys.item")


def test_cli_detects_recbole_by_suffix(run_cli, tmp_path, capsys):
    write_log(tmp_path, np.random.default_rng(0))
    assert run_cli("data", "import", "--interactions", tmp_path / "toys.inter", "--items", tmp_path / "toys.item",
                   "--out", tmp_path / "ds", "--k-core", 2) == 0
    reference = import_csv(tmp_path / "toys.csv", tmp_path / "items.csv", config=CONFIG)
    assert load_dataset(tmp_path / "ds").titles == reference.titles
    (tmp_path / "bad.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tnope\n")
    assert run_cli("data", "import", "--interactions", tmp_path / "bad.inter", "--items", tmp_path / "toys.item",
                   "--out", tmp_path / "ds2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.inter, row 1, field 'timestamp'" in err

"""The release-format reader/writer: real datasets, round trips, and one test per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tca4rec.data import RecDataset, Split, load_dataset, save_dataset
from tca4rec.data.formats import parse_histories
from tca4rec.errors import DatasetError


def tiny_dataset() -> RecDataset:
    """4 items (two with one title, one with commas/quotes/newline), 3 rows per split."""
    titles = ["", "LEGO City Fire Station", 'Board Game, "Deluxe"\nEdition', "LEGO City Fire Station", "None"]
    brands = ["", "LEGO", "", "LEGO", "NA"]
    splits = {}
    for k, name in enumerate(("train", "valid", "test")):
        histories = np.array([[0, 0, 1], [0, 2, 3], [4, 1, 2]], dtype=np.int64)
        splits[name] = Split(name, np.array([1, 2, 3]), histories, np.array([2, 4, 1]),
                             np.array([100, 101, 102]) + 10 * k)
    return RecDataset("tiny", titles, brands, splits, num_users=3, raw_ids=["", "A1", "A2", "A3", "A4"])


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    return save_dataset(tiny_dataset(), tmp_path / "tiny")


def assert_same(a: RecDataset, b: RecDataset) -> None:
    assert a.titles == b.titles and a.brands == b.brands and a.num_users == b.num_users
    assert set(a.splits) == set(b.splits)
    for name in a.splits:
        x, y = a.splits[name], b.splits[name]
        for field in ("users", "histories", "targets", "timestamps"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=f"{name}.{field}")


def test_round_trip_keeps_everything(tiny_dir):
    ds = load_dataset(tiny_dir)
    assert_same(ds, tiny_dataset())
    assert ds.raw_ids == ["", "A1", "A2", "A3", "A4"]
    assert ds.title_group.tolist() == [0, 1, 2, 1, 4]
    items = pd.read_csv(tiny_dir / "item.csv", keep_default_na=False)
    assert items["mapping_iid"].tolist() == ["A1", "A2", "A1", "A4"]  # duplicate titles map to the first
    assert json.loads((tiny_dir / "data_stat.json").read_text()) == {"num_user": 3, "num_item": 4}


def test_save_refuses_existing_folder_and_leaves_no_partial_folder(tiny_dir, tmp_path):
    with pytest.raises(DatasetError, match="already exists"):
        save_dataset(tiny_dataset(), tiny_dir)
    broken = tiny_dataset()
    broken.splits["test"] = None  # writing this split fails half way through
    with pytest.raises(AttributeError):
        save_dataset(broken, tmp_path / "half")
    assert not (tmp_path / "half").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no temporary leftovers


@pytest.mark.parametrize("name,items,users", [("toys", 20669, 19513), ("office", 9913, 12603)])
def test_real_datasets_load_with_release_counts(name, items, users, request):
    path = request.getfixturevalue(f"{name}_dir")
    ds = load_dataset(path)
    assert ds.num_items == items and ds.num_users == users
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 10000, "valid": 5000, "test": 5000}
    assert all(s.histories.shape[1] == 10 for s in ds.splits.values())
    # Split by time: train no later than valid, valid no later than test.
    train, valid, test = (ds.splits[k].timestamps for k in ("train", "valid", "test"))
    assert train.max() <= valid.min() and valid.max() <= test.min()
    # title_group finds the identical titles the release keeps as separate ids.
    first: dict[str, int] = {}
    expected = [first.setdefault(t, i) for i, t in enumerate(ds.titles) if i > 0]
    assert ds.title_group[1:].tolist() == expected
    assert (ds.title_group[1:] != np.arange(1, items + 1)).sum() > 100
    # Spot-check one parsed row against the raw text.
    raw = pd.read_csv(next(path.glob("train*.csv")), nrows=1)
    assert ds.splits["train"].history(0) == json.loads(raw["hist_id"][0])
    assert ds.splits["train"].targets[0] == raw["iid"][0]


def test_toys_first_item_and_brand(toys_dir):
    ds = load_dataset(toys_dir)
    assert ds.titles[1].startswith("LEGO Star Wars 75037") and ds.brands[1] == "LEGO"
    assert ds.raw_ids[1] == "B00IANTSJI"


def reference_parse(texts: list[str], width: int) -> np.ndarray:
    rows = []
    for text in texts:
        ids = json.loads(text)
        rows.append([0] * (width - len(ids)) + ids)
    return np.array(rows, dtype=np.int64).reshape(len(texts), width)


def test_parse_histories_matches_reference_on_random_lists():
    rng = np.random.default_rng(0)
    for _ in range(30):
        lists = [rng.integers(1, 50, size=rng.integers(0, 12)).tolist() for _ in range(rng.integers(1, 20))]
        texts = [rng.choice(["{}", " {} ", "{}"]).format(json.dumps(x, separators=(rng.choice([",", ", "]), ":")))
                 for x in lists]
        width = max(1, max(len(x) for x in lists))
        got = parse_histories(pd.Series(texts, dtype=str), Path("f.csv"), num_items=50)
        np.testing.assert_array_equal(got, reference_parse(texts, width))


# ---- one test per kind of bad input: error names file, row and field -----------------

def rewrite(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, count))


def expect_error(root: Path, file: str, row: int | None = None, field: str | None = None,
                 match: str | None = None) -> DatasetError:
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(root)
    error = info.value
    assert error.file is not None and Path(error.file).name == file, str(error)
    assert error.row == row and error.field == field, str(error)
    assert file in str(error)
    return error


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")


@pytest.mark.parametrize("file", ["item.csv", "data_stat.json"])
def test_missing_file(tiny_dir, file):
    (tiny_dir / file).unlink()
    expect_error(tiny_dir, file, match="missing file")


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_missing_split(tiny_dir, split):
    (tiny_dir / f"{split}.csv").unlink()
    expect_error(tiny_dir, "tiny", match=f"missing the {split} split")


def test_ambiguous_split(tiny_dir):
    (tiny_dir / "train_copy.csv").write_text((tiny_dir / "train.csv").read_text())
    expect_error(tiny_dir, "tiny", match="several train splits")


def test_missing_column(tiny_dir):
    rewrite(tiny_dir / "valid.csv", "hist_id", "history")
    expect_error(tiny_dir, "valid.csv", field="hist_id", match="missing column")


def test_missing_title_column(tiny_dir):
    rewrite(tiny_dir / "item.csv", ",title,", ",name,")
    expect_error(tiny_dir, "item.csv", field="title", match="missing column")


@pytest.mark.parametrize("content", ["", "uid,iid,his_len,hist_id,timestamp\n"])
def test_empty_file(tiny_dir, content):
    (tiny_dir / "test.csv").write_text(content)
    expect_error(tiny_dir, "test.csv", match="empty file|no data rows")


@pytest.mark.parametrize("cut,field,match", [(5, "timestamp", "expected an integer"),  # ",102\n" gone
                                             (12, None, "EOF inside string")])  # cut inside "[4, 1, 2]"
def test_truncated_file(tiny_dir, cut, field, match):
    path = tiny_dir / "train.csv"
    path.write_text(path.read_text()[:-cut])
    expect_error(tiny_dir, "train.csv", row=3, field=field, match=match)


def test_unterminated_quote(tiny_dir):
    path = tiny_dir / "train.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"[', '"[', 1).replace(']"', "]", 1)
    path.write_text("\n".join(lines) + "\n")
    expect_error(tiny_dir, "train.csv", row=2, match="garbled or truncated CSV")


def test_too_many_fields(tiny_dir):
    path = tiny_dir / "valid.csv"
    lines = path.read_text().splitlines()
    lines[3] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    expect_error(tiny_dir, "valid.csv", row=3, match="garbled")


def test_a_repeated_column_is_named_not_resolved(tiny_dir):
    """pandas renames the second 'iid' to 'iid.1' and the first one would silently win."""
    rewrite(tiny_dir / "test.csv", "uid,iid,his_len", "uid,iid,iid,his_len")
    path = tiny_dir / "test.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0]] + [f"{ln.split(',')[0]},1,{ln.split(',', 1)[1]}" for ln in lines[1:]]) + "\n")
    expect_error(tiny_dir, "test.csv", row=0, field="iid", match="'iid' appear more than once")


@pytest.mark.parametrize("rows", ["all", "first"])
def test_a_trailing_comma_is_named_not_read_as_shifted_columns(tiny_dir, rows):
    """pandas took the first field for an index and read every column one place to the left."""
    path = tiny_dir / "test.csv"
    lines = path.read_text().splitlines()
    count = len(lines) - 1 if rows == "all" else 1
    path.write_text("\n".join([lines[0]] + [ln + "," for ln in lines[1:1 + count]] + lines[1 + count:]) + "\n")
    expect_error(tiny_dir, "test.csv", row=1, match="6 fields, the header has 5 \\(a trailing comma\\?\\)")


def test_a_header_field_past_the_csv_size_limit_is_named(tiny_dir):
    path = tiny_dir / "test.csv"
    path.write_text('"' + "x" * 200_000 + '",' + path.read_text())
    expect_error(tiny_dir, "test.csv", row=0, match="garbled CSV header: field larger than field limit")


def test_a_folder_where_a_file_belongs(tiny_dir):
    (tiny_dir / "item.csv").unlink()
    (tiny_dir / "item.csv").mkdir()
    expect_error(tiny_dir, "item.csv", match="a folder, not a file")


def test_non_utf8_bytes(tiny_dir):
    path = tiny_dir / "item.csv"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Fire Station", b"Fire \xff\xfeStation", 1))
    expect_error(tiny_dir, "item.csv", row=1, match="not UTF-8")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a byte-order mark shifts no row
    expect_error(tiny_dir, "item.csv", row=1, match="not UTF-8")
    header, first = data.split(b"\n")[:2]
    path.write_bytes(b"\xef\xbb\xbf" + header + b"\n\xff" + first[1:] + b"\n")  # the bad byte right after a newline
    expect_error(tiny_dir, "item.csv", row=1, match="not UTF-8")


@pytest.mark.parametrize("bad", ["[1, x]", "1, 2", "[1.5]", "[1,, 2]", "[[1]]", "None"])
def test_history_not_a_list_of_ints(tiny_dir, bad):
    rewrite(tiny_dir / "test.csv", '"[2, 3]"', f'"{bad}"')
    expect_error(tiny_dir, "test.csv", row=2, field="hist_id", match="expected a list")


@pytest.mark.parametrize("bad", ["[0]", "[5]", "[-1, 2]", "[1, 99999999999999999999999]"])
def test_history_id_out_of_range(tiny_dir, bad):
    rewrite(tiny_dir / "test.csv", '"[2, 3]"', f'"{bad}"')
    expect_error(tiny_dir, "test.csv", row=2, field="hist_id", match="out of range")


@pytest.mark.parametrize("bad", ["0", "5", "-3"])
def test_target_out_of_range(tiny_dir, bad):
    rewrite(tiny_dir / "valid.csv", "2,4,2,", f"2,{bad},2,")
    expect_error(tiny_dir, "valid.csv", row=2, field="iid", match="out of range")


@pytest.mark.parametrize("bad,match", [("x", "integer"), ("-1", "out of range"), ("1.0", "integer"),
                                       ("", "integer"), ("4", "out of range")])
def test_bad_uid(tiny_dir, bad, match):
    rewrite(tiny_dir / "train.csv", "\n3,1,", f"\n{bad},1,")
    expect_error(tiny_dir, "train.csv", row=3, field="uid", match=match)


def test_bad_timestamp(tiny_dir):
    rewrite(tiny_dir / "train.csv", ",101\n", ",yesterday\n")
    expect_error(tiny_dir, "train.csv", row=2, field="timestamp", match="integer")


def test_duplicate_item_id(tiny_dir):
    rewrite(tiny_dir / "item.csv", ",LEGO,3\n", ",LEGO,2\n")
    expect_error(tiny_dir, "item.csv", row=3, field="iid", match="duplicate item id 2")


def test_item_ids_not_dense(tiny_dir):
    rewrite(tiny_dir / "item.csv", ",LEGO,3\n", ",LEGO,7\n")
    expect_error(tiny_dir, "item.csv", row=4, field="iid", match="3 is missing")


def test_item_id_not_int(tiny_dir):
    rewrite(tiny_dir / "item.csv", ",LEGO,3\n", ",LEGO,three\n")
    expect_error(tiny_dir, "item.csv", row=3, field="iid", match="integer")


def test_empty_title(tiny_dir):
    rewrite(tiny_dir / "item.csv", "A4,None,", "A4,  ,")
    expect_error(tiny_dir, "item.csv", row=4, field="title", match="empty title")


def test_overlong_title(tiny_dir):
    from tca4rec.data.formats import MAX_TITLE_CHARS

    rewrite(tiny_dir / "item.csv", "A4,None,", "A4," + "x" * MAX_TITLE_CHARS + ",")
    load_dataset(tiny_dir)  # at the limit: read
    rewrite(tiny_dir / "item.csv", "A4," + "x" * MAX_TITLE_CHARS + ",", "A4," + "x" * 100_000 + ",")
    expect_error(tiny_dir, "item.csv", row=4, field="title", match="a title of 100,000 characters")


def test_items_out_of_order_are_sorted_by_iid(tiny_dir):
    path = tiny_dir / "item.csv"
    frame = pd.read_csv(path, keep_default_na=False, index_col=0)
    frame.iloc[::-1].to_csv(path)
    assert_same(load_dataset(tiny_dir), tiny_dataset())


def test_brand_column_is_optional(tiny_dir):
    path = tiny_dir / "item.csv"
    pd.read_csv(path, keep_default_na=False, index_col=0).drop(columns=["brand", "rawid"]).to_csv(path)
    ds = load_dataset(tiny_dir)
    assert ds.brands == [""] * 5 and ds.titles == tiny_dataset().titles


@pytest.mark.parametrize("content,field,match", [
    ("{not json", None, "not valid JSON"),
    ("[" * 5000 + "]" * 5000, None, "nested too deeply"),
    ("[1, 2]", None, "JSON object"),
    ('{"num_user": 3}', "num_item", "non-negative integer"),
    ('{"num_user": -1, "num_item": 4}', "num_user", "non-negative integer"),
    ('{"num_user": 3, "num_item": "4"}', "num_item", "non-negative integer"),
    ('{"num_user": 3, "num_item": 5}', "num_item", "has 4 items"),
])
def test_bad_data_stat(tiny_dir, content, field, match):
    (tiny_dir / "data_stat.json").write_text(content)
    expect_error(tiny_dir, "data_stat.json", field=field, match=match)


def test_data_stat_not_utf8(tiny_dir):
    (tiny_dir / "data_stat.json").write_bytes(b'{"num_user": 3, "num_item": 4, "x": "\xff"}')
    expect_error(tiny_dir, "data_stat.json", row=0, match="not UTF-8")  # row as in a CSV: lines before it


def test_data_stat_with_byte_order_mark(tiny_dir):
    """Saved by an editor that marks UTF-8 (Notepad, PowerShell): read like the file without."""
    plain = load_dataset(tiny_dir)
    stat = tiny_dir / "data_stat.json"
    stat.write_bytes(b"\xef\xbb\xbf" + stat.read_bytes())
    marked = load_dataset(tiny_dir)
    assert (marked.num_users, marked.num_items) == (plain.num_users, plain.num_items) == (3, 4)

"""Reliability: malformed CSV/JSON either loads exactly right or raises DatasetError naming
the file (and the row/field of a bad value), never any other exception."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tca4rec.data import load_dataset, save_dataset
from tca4rec.errors import DatasetError

from .test_formats import tiny_dataset

NUM_ITEMS, NUM_USERS = 4, 3
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

integers = st.one_of(st.integers(-5, 8), st.integers(-10**25, 10**25))
int_text = st.one_of(integers.map(str), integers.map(lambda i: f" {i}"), st.sampled_from(["", "1.0", "x", "1e3", "٣"]),
                     st.text(max_size=6))
hist_text = st.one_of(
    st.lists(integers, max_size=12).map(json.dumps),
    st.lists(st.one_of(integers, st.floats(allow_nan=False), st.text(max_size=3)), max_size=4).map(str),
    st.text(max_size=12),
)


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory) -> Path:
    return save_dataset(tiny_dataset(), tmp_path_factory.mktemp("fuzz") / "valid")


def fresh_copy(valid_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "case"
    if target.exists():
        shutil.rmtree(target)
    return Path(shutil.copytree(valid_dir, target))


def good_int(text: str, low: int, high: int | None) -> bool:
    if not re.fullmatch(r"[ \t]*[+-]?[0-9]+[ \t]*", text):
        return False
    value = int(text)
    return low <= value and (high is None or value <= high)


def good_history(text: str) -> bool:
    inner = text.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        return False
    body = inner[1:-1]
    return not body.strip() or all(good_int(t, 1, NUM_ITEMS) for t in body.split(","))


def assert_names_file(error: DatasetError, name: str) -> None:
    assert error.file is not None and Path(error.file).name == name, str(error)
    assert name in str(error)


@FUZZ
@given(rows=st.lists(st.tuples(int_text, int_text, hist_text, int_text), min_size=1, max_size=6))
def test_split_values_load_exactly_or_raise_at_a_bad_cell(valid_dir, tmp_path, rows):
    root = fresh_copy(valid_dir, tmp_path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["uid", "iid", "hist_id", "timestamp"])
    writer.writerows(rows)
    (root / "train.csv").write_text(buffer.getvalue())
    checks = {"uid": lambda v: good_int(v, 0, NUM_USERS), "iid": lambda v: good_int(v, 1, NUM_ITEMS),
              "hist_id": good_history, "timestamp": lambda v: good_int(v, 0, None)}
    columns = ["uid", "iid", "hist_id", "timestamp"]
    # Python's csv writer leaves a lone "\r" unquoted, which readers take as a line break, so
    # such a file's rows are not ``rows``: then only the error itself is checked.
    same_rows = "\r" not in buffer.getvalue()
    all_good = same_rows and all(checks[c](row[k]) for row in rows for k, c in enumerate(columns))
    try:
        ds = load_dataset(root)
    except DatasetError as error:
        assert_names_file(error, "train.csv")
        assert not all_good, str(error)
        if same_rows and error.field in checks:  # a value error: that cell really is bad
            assert not checks[error.field](rows[error.row - 1][columns.index(error.field)]), str(error)
        return
    assert all_good, f"loaded invalid rows {rows}"
    train = ds.splits["train"]
    assert train.users.tolist() == [int(r[0]) for r in rows] and train.targets.tolist() == [int(r[1]) for r in rows]
    assert [train.history(k) for k in range(len(rows))] == [json.loads(r[2]) for r in rows]
    assert train.timestamps.tolist() == [int(r[3]) for r in rows]


@FUZZ
@given(file=st.sampled_from(["item.csv", "train.csv", "valid.csv", "test.csv", "data_stat.json"]),
       data=st.data())
def test_truncated_or_corrupted_bytes_never_escape(valid_dir, tmp_path, file, data):
    root = fresh_copy(valid_dir, tmp_path)
    path = root / file
    original = path.read_bytes()
    mode = data.draw(st.sampled_from(["truncate", "splice", "replace"]))
    if mode == "truncate":
        content = original[: data.draw(st.integers(0, len(original)))]
    elif mode == "splice":
        at = data.draw(st.integers(0, len(original)))
        content = original[:at] + data.draw(st.binary(min_size=1, max_size=8)) + original[at:]
    else:
        content = data.draw(st.binary(max_size=64))
    path.write_bytes(content)
    try:
        ds = load_dataset(root)
    except DatasetError as error:
        if file not in str(error):  # a count or uid that no longer agrees is reported where it is checked
            assert error.field in {"num_item", "uid"}, str(error)
        assert error.file is not None and Path(error.file).parent == root, str(error)
        return
    assert ds.num_items == NUM_ITEMS and len(ds.titles) == NUM_ITEMS + 1  # whatever loaded is consistent
    for split in ds.splits.values():
        assert ((split.histories >= 0) & (split.histories <= NUM_ITEMS)).all()
        assert ((split.targets >= 1) & (split.targets <= NUM_ITEMS)).all()


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=9), inner,
                                                                                       max_size=3), max_leaves=8)


@FUZZ
@given(stat=st.one_of(json_values, st.fixed_dictionaries({"num_user": json_values, "num_item": json_values}),
                      st.fixed_dictionaries({"num_user": st.integers(-2, 5), "num_item": st.integers(-2, 6)})))
def test_data_stat_json(valid_dir, tmp_path, stat):
    root = fresh_copy(valid_dir, tmp_path)
    (root / "data_stat.json").write_text(json.dumps(stat))
    try:
        ds = load_dataset(root)
    except DatasetError as error:
        if error.field == "uid":  # num_user below the largest uid: reported at that uid
            assert stat["num_user"] < NUM_USERS and Path(error.file).name == "train.csv", str(error)
        else:
            assert_names_file(error, "data_stat.json")
        return
    assert stat["num_item"] == NUM_ITEMS and stat["num_user"] >= NUM_USERS and ds.num_users == stat["num_user"]


@FUZZ
@given(items=st.lists(st.tuples(int_text, st.text(max_size=12), st.text(max_size=5)), min_size=0, max_size=6),
       drop=st.sampled_from([None, "iid", "title", "brand"]))
def test_item_tables(valid_dir, tmp_path, items, drop):
    root = fresh_copy(valid_dir, tmp_path)
    header = [c for c in ("", "rawid", "title", "brand", "iid") if c != drop]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for k, (iid, title, brand) in enumerate(items):
        cells = {"": str(k), "rawid": f"A{k}", "title": title, "brand": brand, "iid": iid}
        writer.writerow([cells[c] for c in header])
    (root / "item.csv").write_text(buffer.getvalue())
    (root / "data_stat.json").write_text(json.dumps({"num_user": NUM_USERS, "num_item": len(items)}))
    try:
        ds = load_dataset(root)
    except DatasetError as error:
        assert error.file is not None and Path(error.file).name in {"item.csv", "data_stat.json", "train.csv",
                                                                     "valid.csv", "test.csv"}, str(error)
        return
    assert drop in (None, "brand") and len(items) == NUM_ITEMS
    ids = sorted(int(i) for i, _, _ in items)
    assert ids == [1, 2, 3, 4]
    by_id = {int(i): (t, b) for i, t, b in items}
    assert ds.titles[1:] == [by_id[i][0] for i in ids]
    assert all(t.strip() for t in ds.titles[1:])
    np.testing.assert_array_equal(ds.title_group[1:] > 0, True)

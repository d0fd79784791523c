"""Read and write the release format of the paper's datasets (one folder per dataset).

A dataset folder holds ``item.csv`` (iid, title, rawid, mapping_iid, [brand]; an unnamed
leading index column), one ``train*.csv``, ``valid*.csv`` and ``test*.csv`` (uid, iid =
target, hist_id = a Python-style list of prior item ids oldest first, timestamp; other
columns are ignored) and ``data_stat.json`` (num_user, num_item).

Loading validates everything a later stage would trip over and raises ``DatasetError``
naming the file, the 1-based data row and the field, because a bad id found deep inside
training is a stack trace nobody can act on. Parsing is column-wise (pandas + numpy string
ops), so a 10,000-row split loads in milliseconds. Saving builds the whole folder in a
temporary sibling and renames it (``atomic_dir``): a crash never leaves half a dataset.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tca4rec.data.dataset import SPLITS, RecDataset, Split
from tca4rec.errors import DatasetError
from tca4rec.io import atomic_dir
from tca4rec.validate import bad_line, loads_json, utf8_text

ITEM_FILE = "item.csv"
STAT_FILE = "data_stat.json"
SPLIT_COLUMNS = ("uid", "iid", "hist_id", "timestamp")
ITEM_COLUMNS = ("iid", "title")
_INT_TOKEN = r"[ \t]*[+-]?[0-9]+[ \t]*"  # ASCII only: numpy cannot parse other digits
_MAX_DIGITS = 18  # anything longer overflows int64 and is certainly out of range
# The format's titles are cut to 100 characters (``data prepare``/``import`` do it); ten times
# that is refused: the title trie is as wide as the longest title for every item, and a history
# of such titles outgrows the positions a model reads: refused here, by file and row, not deep inside.
MAX_TITLE_CHARS = 1000


def load_dataset(path: str | Path) -> RecDataset:
    """Load a dataset folder in the release format, validating every field."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError("dataset folder not found", file=root)
    num_users, num_items = _read_stat(root / STAT_FILE)
    titles, brands, raw_ids = _read_items(root / ITEM_FILE)
    if len(titles) - 1 != num_items:
        raise DatasetError(f"num_item is {num_items} but {ITEM_FILE} has {len(titles) - 1} items",
                           file=root / STAT_FILE, field="num_item")
    splits = {name: _read_split(_split_file(root, name), name, num_items, num_users) for name in SPLITS}
    return RecDataset(root.name, titles, brands, splits, num_users, root=root, raw_ids=raw_ids)


def save_dataset(ds: RecDataset, out_dir: str | Path) -> Path:
    """Write ``ds`` in the release format to ``out_dir`` (which must not exist), atomically."""
    out = Path(out_dir)
    if out.exists():
        raise DatasetError("output folder already exists; choose a new one", file=out)
    raw_ids = ds.raw_ids or [""] + [f"item{i}" for i in range(1, ds.num_items + 1)]
    with atomic_dir(out) as tmp:
        items = pd.DataFrame({
            "rawid": raw_ids[1:],
            "title": ds.titles[1:],
            "mapping_iid": [raw_ids[g] for g in ds.title_group[1:]],
            "brand": ds.brands[1:],
            "iid": np.arange(1, ds.num_items + 1),
        })
        items.to_csv(tmp / ITEM_FILE, index=True, quoting=csv.QUOTE_MINIMAL)
        for name in SPLITS:
            if name in ds.splits:
                _write_split(ds.splits[name], tmp / f"{name}.csv")
        (tmp / STAT_FILE).write_text(json.dumps({"num_user": ds.num_users, "num_item": ds.num_items}, indent=2) + "\n")
    return out


def format_history(histories: np.ndarray) -> list[str]:
    """Left-padded [R, H] id matrix -> the release's "[3, 17, 5]" strings (padding dropped)."""
    return ["[" + ", ".join(map(str, row[row > 0].tolist())) + "]" for row in histories]


def _write_split(split: Split, path: Path) -> None:
    frame = pd.DataFrame({
        "uid": split.users,
        "iid": split.targets,
        "his_len": split.history_lengths,
        "hist_id": format_history(split.histories),
        "timestamp": split.timestamps,
    })
    frame.to_csv(path, index=False)


def _split_file(root: Path, name: str) -> Path:
    matches = sorted(root.glob(f"{name}*.csv"))
    if not matches:
        raise DatasetError(f"missing the {name} split ({name}*.csv)", file=root)
    if len(matches) > 1:
        raise DatasetError(f"several {name} splits: {', '.join(m.name for m in matches)}; keep one", file=root)
    return matches[0]


def _read_stat(path: Path) -> tuple[int, int]:
    try:
        stat = loads_json(read_utf8_text(path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", file=path) from None
    if not isinstance(stat, dict):
        raise DatasetError("expected a JSON object with num_user and num_item", file=path)
    values = []
    for key in ("num_user", "num_item"):
        value = stat.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DatasetError(f"expected a non-negative integer, got {value!r}", file=path, field=key)
        values.append(value)
    return values[0], values[1]


def read_utf8_text(path: Path) -> str:
    """A data file's text; a missing file or non-UTF-8 bytes are a DatasetError naming file and row."""
    if not path.is_file():
        raise DatasetError("a folder, not a file" if path.is_dir() else "missing file", file=path)
    try:
        return utf8_text(path)
    except UnicodeDecodeError as e:  # a CSV's header line is row 0
        raise DatasetError(f"not UTF-8 text (byte {e.start})", file=path, row=bad_line(e) - 1) from None


def read_csv_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """All cells as strings (no NA guessing: a product may be titled "None")."""
    buffer = io.StringIO(read_utf8_text(path))
    try:
        header = next((row for row in csv.reader(buffer) if row), [])  # as written: pandas renames repeats
    except csv.Error as e:  # a header field over csv's size limit
        raise DatasetError(f"garbled CSV header: {e}", file=path, row=0) from None
    buffer.seek(0)
    try:
        frame = pd.read_csv(buffer, dtype=str, na_filter=False, engine="c")
    except pd.errors.EmptyDataError:
        raise DatasetError("empty file", file=path) from None
    except pd.errors.ParserError as e:
        raise DatasetError(f"garbled or truncated CSV: {_parser_reason(e)}", file=path, row=_parser_row(e)) from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DatasetError(f"column(s) {', '.join(map(repr, repeated))} appear more than once in the header",
                           file=path, row=0, field=repeated[0])
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the extra leading fields for an index
        raise DatasetError(f"{len(header) + frame.index.nlevels} fields, the header has {len(header)} "
                           "(a trailing comma?)", file=path, row=1)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"missing column(s) {', '.join(missing)} (have: {', '.join(map(str, frame.columns))})",
                           file=path, field=missing[0])
    if len(frame) == 0:
        raise DatasetError("no data rows", file=path)
    return frame


def _parser_reason(error: Exception) -> str:
    return str(error).replace("Error tokenizing data. C error: ", "").strip()


def _parser_row(error: Exception) -> int | None:
    """pandas says "in line L" (1-based file line, header = line 1) or "at row R" (data row)."""
    text = str(error)
    if m := re.search(r"in line (\d+)", text):
        return int(m.group(1)) - 1
    if m := re.search(r"at row (\d+)", text):
        return int(m.group(1))
    return None


def int_column(frame: pd.DataFrame, column: str, path: Path, low: int, high: int | None) -> np.ndarray:
    """One column as int64, each value in [low, high]; else DatasetError at the first bad row."""
    values = frame[column]
    ok = values.str.fullmatch(_INT_TOKEN).to_numpy(dtype=bool)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise DatasetError(f"expected an integer, got {values.iloc[row]!r}", file=path, row=row + 1, field=column)
    stripped = values.str.strip()
    _check_digits(stripped, path, column, np.arange(len(values)))
    ints = stripped.astype(np.int64).to_numpy()
    _check_range(ints, np.arange(len(ints)), path, column, low, high)
    return ints


def _check_digits(values: pd.Series, path: Path, field: str, rows: np.ndarray) -> None:
    """Refuse integers too long for int64 before converting (they are out of range anyway)."""
    lengths = values.str.lstrip("+-").str.lstrip("0").str.len().to_numpy()
    huge = np.flatnonzero(lengths > _MAX_DIGITS)
    if huge.size:
        raise DatasetError(f"{values.iloc[huge[0]]} is out of range", file=path,
                           row=int(rows[huge[0]]) + 1, field=field)


def _check_range(ints: np.ndarray, rows: np.ndarray, path: Path, field: str, low: int, high: int | None) -> None:
    bad = (ints < low) | (ints > high if high is not None else False)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise DatasetError(f"{ints[k]} is out of range (expected {bounds})", file=path, row=int(rows[k]) + 1,
                           field=field)


def _read_items(path: Path) -> tuple[list[str], list[str], list[str]]:
    frame = read_csv_table(path, ITEM_COLUMNS)
    iids = int_column(frame, "iid", path, 1, None)
    order = np.argsort(iids, kind="stable")
    expected = np.arange(1, len(iids) + 1)
    if not np.array_equal(iids[order], expected):
        sorted_ids = iids[order]
        k = int(np.flatnonzero(sorted_ids != expected)[0])
        # Either a duplicate (the sorted id repeats) or a gap (the sorted id jumps ahead).
        dup = k > 0 and sorted_ids[k] == sorted_ids[k - 1]
        reason = f"duplicate item id {sorted_ids[k]}" if dup else f"item ids must be 1..{len(iids)}; {k + 1} is missing"
        raise DatasetError(reason, file=path, row=int(order[k]) + 1, field="iid")
    titles = frame["title"].to_numpy(dtype=object)[order]
    title_series = pd.Series(titles)
    blank = np.flatnonzero(title_series.str.strip().eq("").to_numpy())
    if blank.size:
        raise DatasetError("empty title", file=path, row=int(order[blank[0]]) + 1, field="title")
    lengths = title_series.str.len().to_numpy()
    if lengths.max() > MAX_TITLE_CHARS:
        k = int(np.argmax(lengths > MAX_TITLE_CHARS))
        raise DatasetError(f"a title of {lengths[k]:,} characters (at most {MAX_TITLE_CHARS:,}; `tca4rec data "
                           "import` cuts titles to 100)", file=path, row=int(order[k]) + 1, field="title")
    brands = frame["brand"].to_numpy(dtype=object)[order] if "brand" in frame.columns else [""] * len(iids)
    raw_ids = frame["rawid"].to_numpy(dtype=object)[order] if "rawid" in frame.columns else [
        f"item{i}" for i in expected]
    return [""] + list(titles), [""] + list(brands), [""] + list(raw_ids)


def _read_split(path: Path, name: str, num_items: int, num_users: int) -> Split:
    frame = read_csv_table(path, SPLIT_COLUMNS)
    users = int_column(frame, "uid", path, 0, num_users)
    targets = int_column(frame, "iid", path, 1, num_items)
    timestamps = int_column(frame, "timestamp", path, 0, None)
    histories = parse_histories(frame["hist_id"], path, num_items)
    return Split(name, users, histories, targets, timestamps)


def parse_histories(column: pd.Series, path: Path, num_items: int) -> np.ndarray:
    """"[3, 17, 5]" strings -> left-padded int64 [R, H], H = longest history (at least 1).

    All rows are parsed in one pass: strip the brackets, join every list with ",", split once,
    then scatter the ids into the padded matrix by their per-row counts.
    """
    text = column.str.strip()
    bracketed = (text.str.startswith("[") & text.str.endswith("]")).to_numpy(dtype=bool)
    if not bracketed.all():
        row = int(np.flatnonzero(~bracketed)[0])
        raise DatasetError(f"expected a list like [3, 17, 5], got {column.iloc[row]!r}", file=path, row=row + 1,
                           field="hist_id")
    inner = text.str.slice(1, -1)
    nonempty = inner.str.strip().ne("").to_numpy(dtype=bool)
    counts = np.where(nonempty, inner.str.count(",").to_numpy() + 1, 0)  # [R]
    tokens = pd.Series(",".join(inner[nonempty]).split(",") if nonempty.any() else [], dtype=str)
    token_rows = np.repeat(np.arange(len(counts)), counts)  # [T] row of each id
    ok = tokens.str.fullmatch(_INT_TOKEN).to_numpy(dtype=bool)
    if not ok.all():
        row = int(token_rows[np.flatnonzero(~ok)[0]])
        raise DatasetError(f"expected a list of integer item ids, got {column.iloc[row]!r}", file=path,
                           row=row + 1, field="hist_id")
    tokens = tokens.str.strip()
    _check_digits(tokens, path, "hist_id", token_rows)
    ids = tokens.astype(np.int64).to_numpy()
    _check_range(ids, token_rows, path, "hist_id", 1, num_items)
    width = max(int(counts.max(initial=0)), 1)
    histories = np.zeros((len(counts), width), dtype=np.int64)
    # Column of each id when right-aligned: width - count + position within its row.
    ends = np.cumsum(counts)
    position = np.arange(len(ids)) - np.repeat(ends - counts, counts)
    histories[token_rows, width - np.repeat(counts, counts) + position] = ids
    return histories

"""Build a release-format dataset from generic logs: CSV files or RecBole atomic files.

Two files: interactions (one row per user-item event with a time) and items (item key,
title, optional brand). Column names are options, so most public logs import without
editing. RecBole atomic files (``.inter`` / ``.item``) are tab-separated with typed
headers (``user_id:token``, ``timestamp:float``, ``title:token_seq``); the same names
select their fields, and their float timestamps are whole seconds or get floored. Everything
after reading goes through the shared pipeline (``prepare.build_dataset``), so k-core, title
cleaning, duplicate merging and the time split behave exactly as for the Amazon files.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tca4rec.data.dataset import RecDataset
from tca4rec.data.formats import int_column, read_csv_table, read_utf8_text
from tca4rec.data.prepare import PrepareConfig, build_dataset
from tca4rec.errors import DatasetError

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True)
class ImportColumns:
    """Column (CSV) or field (RecBole) names in the two files."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    title: str = "title"
    brand: str | None = None  # optional brand/category column of the items file
    items_item: str | None = None  # item key column of the items file (default: ``item``)


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def import_csv(interactions: str | Path, items: str | Path, columns: ImportColumns = ImportColumns(),
               config: PrepareConfig = PrepareConfig(), strict: bool = False,
               warn: Callable[[str], None] = _stderr) -> RecDataset:
    """Read the two CSV files and run the shared pipeline; errors name file, row and column.
    What the files disagree on (``check_consistency``) is a warning, or with ``strict`` an error."""
    interactions, items = Path(interactions), Path(items)
    log = read_csv_table(interactions, (columns.user, columns.item, columns.time))
    catalog = read_csv_table(items, _item_columns(columns))
    times = int_column(log, columns.time, interactions, 0, None)
    check_consistency(log, catalog, columns, interactions, items, strict, warn)
    return _build(log, times, catalog, columns, interactions.stem, config)


def import_recbole(interactions: str | Path, items: str | Path, columns: ImportColumns = ImportColumns(),
                   config: PrepareConfig = PrepareConfig(), strict: bool = False,
                   warn: Callable[[str], None] = _stderr) -> RecDataset:
    """Read a RecBole ``.inter`` and ``.item`` pair and run the shared pipeline.

    Errors name the file, the 1-based data row (the header is row 0) and the field.
    """
    interactions, items = Path(interactions), Path(items)
    log = read_atomic_file(interactions, (columns.user, columns.item, columns.time))
    catalog = read_atomic_file(items, _item_columns(columns))
    times = _seconds_column(log, columns.time, interactions)
    check_consistency(log, catalog, columns, interactions, items, strict, warn)
    return _build(log, times, catalog, columns, interactions.stem, config)


def check_consistency(log: pd.DataFrame, catalog: pd.DataFrame, columns: ImportColumns, interactions: Path,
                      items: Path, strict: bool, warn: Callable[[str], None]) -> None:
    """Count what the pipeline would otherwise drop or choose silently: an item listed twice in
    the items file with different titles (the first is kept), and events whose item is not in
    the items file (dropped). ``strict``: the first such row is a DatasetError instead."""
    key = catalog[columns.items_item or columns.item].str.strip()
    titles = catalog[columns.title]
    first_title = titles.groupby(key).transform("first")
    conflicting = (titles != first_title).to_numpy()
    if conflicting.any():
        row = int(np.flatnonzero(conflicting)[0])
        count = int(key[conflicting].nunique())
        message = (f"{count} item id(s) listed again with another title (the first title is kept), "
                   f"first at row {row + 1}: {key.iloc[row]!r}")
        if strict:
            raise DatasetError(message, file=items, row=row + 1, field=columns.title)
        warn(f"{items}: {message}")
    missing = (~log[columns.item].str.strip().isin(set(key))).to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        distinct = int(log[columns.item][missing].str.strip().nunique())
        message = (f"{int(missing.sum())} event(s) name {distinct} item(s) missing from {items.name} and are "
                   f"dropped, first at row {row + 1}: {log[columns.item].iloc[row].strip()!r}")
        if strict:
            raise DatasetError(message, file=interactions, row=row + 1, field=columns.item)
        warn(f"{interactions}: {message}")


def read_atomic_file(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A RecBole atomic file as string columns named without their ``:type`` suffix."""
    text = read_utf8_text(path)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DatasetError("empty file (expected a header like user_id:token<TAB>item_id:token)", file=path)
    header = lines[0].split("\t")
    names = []
    for column in header:
        name, sep, kind = column.strip().rpartition(":")
        if not sep or not name or kind not in RECBOLE_TYPES:
            raise DatasetError(f"header field {column!r} is not NAME:TYPE with TYPE one of "
                               f"{', '.join(RECBOLE_TYPES)} (fields are tab-separated)", file=path, row=0)
        names.append(name)
    if len(set(names)) < len(names):
        raise DatasetError(f"duplicate field names in the header: {', '.join(names)}", file=path, row=0)
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(f"missing field(s) {', '.join(missing)} (have: {', '.join(names)})", file=path,
                           field=missing[0])
    for row, line in enumerate(lines[1:], start=1):
        if line.count("\t") != len(header) - 1:
            raise DatasetError(f"expected {len(header)} tab-separated fields, got {line.count(chr(9)) + 1}",
                               file=path, row=row)
    frame = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, na_filter=False, quoting=csv.QUOTE_NONE,
                        engine="c", skip_blank_lines=False, header=0, names=names)
    if len(frame) == 0:
        raise DatasetError("no data rows", file=path)
    return frame


def _seconds_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A ``float`` timestamp field as whole seconds (floored); DatasetError at the first bad row."""
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values >= 2.0 ** 62)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"expected a non-negative number of seconds, got {frame[column].iloc[row]!r}",
                           file=path, row=row + 1, field=column)
    return np.floor(values).astype(np.int64)


def _item_columns(columns: ImportColumns) -> tuple[str, ...]:
    return tuple(c for c in (columns.items_item or columns.item, columns.title, columns.brand) if c)


def _build(log: pd.DataFrame, times: np.ndarray, catalog: pd.DataFrame, columns: ImportColumns, name: str,
           config: PrepareConfig) -> RecDataset:
    events = pd.DataFrame({"user": log[columns.user].str.strip(), "item": log[columns.item].str.strip(),
                           "time": times})
    products = pd.DataFrame({
        "item": catalog[columns.items_item or columns.item].str.strip(),
        "title": catalog[columns.title],
        "brand": catalog[columns.brand] if columns.brand else "",
    })
    return build_dataset(events, products, name, config)

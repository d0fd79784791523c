"""Read a file of user histories for batch recommendation: JSON lines or CSV, every row checked first.

JSON lines (any suffix but ``.csv``): one object per line, ``{"user": ..., "history": [...]}``,
the history a list of catalog titles or item ids, oldest first; blank lines are skipped.
CSV (``.csv``): columns ``user`` and ``history``, the history cell a JSON list
(``"[""Uno Card Game"", 17]"``). A user is a string or an integer.

Every row is checked before anything is decoded, so a bad row stops a long job at once
(``DatasetError`` naming the file, the row and the field), or, with ``skip_bad``, is listed
in the returned bad rows and left out. The row of a problem is the line of a JSON-lines
file and the data row of a CSV (its header is row 0), as everywhere in ``DatasetError``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tca4rec.errors import DatasetError
from tca4rec.llm.recommend import Catalog, InputError
from tca4rec.validate import loads_json

SUGGESTIONS = 20  # close-title hints are computed for the first bad rows only (each costs a catalog scan)
BAD_ROW_FIELDS = ("row", "field", "error")  # a line of a --skip-bad-rows file


@dataclass(frozen=True)
class HistoryRow:
    row: int  # line (JSON lines) or data row (CSV) in the input file
    user: str | int
    items: list[int]  # item ids, oldest first, at most the run's history width


@dataclass(frozen=True)
class BadRow:
    row: int
    field: str | None
    error: str  # one line, without the file and row

    def record(self) -> dict:
        return dict(zip(BAD_ROW_FIELDS, (self.row, self.field, self.error)))


def read_histories(path: str | Path, catalog: Catalog, width: int,
                   skip_bad: bool = False) -> tuple[list[HistoryRow], list[BadRow]]:
    """The good rows of ``path`` in file order and, with ``skip_bad``, the bad ones (else the first is raised)."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError("a folder, not a histories file (JSON lines or .csv)", file=path)
    if not path.is_file():
        raise DatasetError("no such file", file=path)
    rows: list[HistoryRow] = []
    bad: list[BadRow] = []
    for row, record in _records(path):
        try:
            rows.append(_history_row(row, record, catalog, width, suggest=len(bad) < SUGGESTIONS))
        except _BadValue as e:
            if not skip_bad:
                raise DatasetError(e.message, file=path, row=row, field=e.field) from None
            bad.append(BadRow(row, e.field, e.message))
    if not rows and not bad:
        raise DatasetError("no histories in it (empty, or blank lines only)", file=path)
    return rows, bad


class _BadValue(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(row, parsed record or a _BadValue to raise) for every non-blank row of the file."""
    try:
        # utf-8-sig: spreadsheets and PowerShell start the file with a byte-order mark
        with path.open(encoding="utf-8-sig", newline="" if path.suffix.lower() == ".csv" else None) as f:
            if path.suffix.lower() == ".csv":
                yield from _csv_records(path, f)
                return
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield line_number, loads_json(line)
                except json.JSONDecodeError as e:
                    yield line_number, _BadValue(f"not a JSON object ({e.msg} at column {e.colno})", None)
    except UnicodeDecodeError as e:
        raise DatasetError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=path) from None


def _csv_records(path: Path, f) -> Iterator[tuple[int, object]]:
    reader = csv.DictReader(f)
    missing = {"user", "history"} - set(reader.fieldnames or [])
    if missing:
        raise DatasetError(f"needs the columns user and history; has {reader.fieldnames or 'none'}", file=path, row=0)
    for data_row, record in enumerate(reader, start=1):
        cell = record.get("history") or ""
        try:
            history = loads_json(cell)
        except json.JSONDecodeError as e:
            yield data_row, _BadValue(f"{cell[:80]!r} is not a JSON list ({e.msg})", "history")
            continue
        yield data_row, {"user": record.get("user"), "history": history}


def _history_row(row: int, record: object, catalog: Catalog, width: int, suggest: bool) -> HistoryRow:
    if isinstance(record, _BadValue):
        raise record
    if not isinstance(record, dict):
        raise _BadValue(f"not a JSON object with user and history (got {type(record).__name__})", None)
    user = record.get("user")
    if isinstance(user, bool) or not isinstance(user, (str, int)) or user == "":
        raise _BadValue(f"{user!r} is not a user (a non-empty string or an integer)", "user")
    if "history" not in record:
        raise _BadValue("missing", "history")
    try:
        items = catalog.item_ids(record["history"], width, suggest=suggest)
    except InputError as e:
        raise _BadValue(str(e).removeprefix(f"{e.field} "), e.field) from None
    return HistoryRow(row, user, items)

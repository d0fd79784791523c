"""The one reader of JSON-lines run files (predictions, training logs): every damaged line is named."""

from __future__ import annotations

import re

import pytest

from tca4rec.errors import RunError
from tca4rec.validate import read_jsonl, read_text


def test_records_keep_their_line_numbers_across_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"row": 0}\n\n  \n{"row": 1}\r\n{"row": 2}')
    assert read_jsonl(path) == [(1, {"row": 0}), (4, {"row": 1}), (5, {"row": 2})]
    assert read_text(path).startswith('{"row": 0}')


@pytest.mark.parametrize("data, message", [
    (b'{"row": 0}\n{oops\n', ", line 2 is not JSON"),
    (b'{"row": 0}\n\n[1, 2]\n', ", line 3 is not a record (a JSON object)"),
    (b'{"row": 0}\n"text"\n', ", line 2 is not a record (a JSON object)"),
    (b'{"row": 0}\n' + b"[" * 100_000 + b"\n", ", line 2 is not JSON (nested too deeply to read"),
    (b'{"row": 0}\n{"title": "caf\xe9"}\n', ", line 2 is not UTF-8 text"),
    (b'\xef\xbb\xbf{"row": 0}\n\n\xff\n', ", line 3 is not UTF-8 text"),
])
def test_a_damaged_line_is_a_run_error_naming_file_and_line(tmp_path, data, message):
    path = tmp_path / "p.jsonl"
    path.write_bytes(data)
    with pytest.raises(RunError, match="^" + re.escape(f"{path}{message}")):
        read_jsonl(path)


def test_a_missing_file_is_left_to_the_caller(tmp_path):
    """Each caller knows what to advise (evaluate first, decode again), so it is not a RunError here."""
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "absent.jsonl")

"""Benchmarks (``tca4rec bench ...``), each measured as ratios against a baseline in one process.

A benchmark's ``--out`` JSON is marked with the benchmark's name (``write_result``), so that a
later run of the same benchmark may replace it and nothing else may (``check_out``, the shared
rule of ``tca4rec.io.check_output``).
"""

from __future__ import annotations

from pathlib import Path

from tca4rec.io import atomic_write_json, check_output, json_record


def check_out(path: str | Path, name: str) -> None:
    """RunError unless ``path`` is new or an earlier result of the ``name`` benchmark."""
    check_output(path, "--out", json_record("bench", name))


def write_result(path: str | Path, name: str, result: dict) -> None:
    atomic_write_json(path, {"bench": name, **result})

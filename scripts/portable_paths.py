"""Make a finished study folder committable: its run records' absolute paths become relative.

Run folders record where their data, teacher and outputs were (``config.json``: ``data``,
``out``, ``cf``, ``dataset.root``) as absolute paths of the machine that ran them. A study
kept in the repository (``docs/results/office-cpu.yaml``) must not carry those, so before a
finished cell is committed this rewrites every absolute path under the repository's parent
folder (the repository and ``../shared`` beside it) relative to the repository root, which is
where the README's commands run. Other strings and files are left as they are; every rewrite
is atomic.

Usage: python scripts/portable_paths.py FOLDER [FOLDER ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tca4rec.io import atomic_write_json

REPO = Path(__file__).resolve().parent.parent


def portable(value, root: Path = REPO):
    """``value`` (a JSON value) with absolute paths under ``root``'s parent made relative to ``root``."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(root.parent):
        return os.path.relpath(value, root)
    return value


def rewrite(folder: Path, root: Path = REPO) -> list[Path]:
    """Rewrite the JSON records under ``folder`` (checkpoints excluded); returns the changed files."""
    changed = []
    for path in sorted(folder.rglob("*.json")):
        if "checkpoints" in path.relative_to(folder).parts:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        new = portable(record, root)
        if new != record:
            atomic_write_json(path, new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    for arg in sys.argv[1:]:
        for path in rewrite(Path(arg).resolve()):
            print(f"rewrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")

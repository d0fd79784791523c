"""Atomic file writes: a crash never leaves a half-written dataset, checkpoint or report.

Everything is written to a temporary file in the destination folder, flushed to disk, and
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows).

The one deletion the project does (``--overwrite`` of a run folder) goes through
``remove_own_folder``: it deletes a folder only if every entry in it is one the project
writes, so no command can delete a file a person put there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import IO, Any

from tca4rec.errors import RunError

TEMPORARY = ".*.tmp"  # what the atomic writers below leave behind when a process is killed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb", encoding=None) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def atomic_save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors, atomically (safe to load: no pickle)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then rename it onto ``path`` (which must not exist)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_own_folder(path: str | os.PathLike, own: Sequence[str], what: str) -> None:
    """RunError unless ``path`` is a real folder whose every top-level entry matches one of the
    ``own`` name patterns (``fnmatch``) of a ``what``; the message names what is in the way."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        kind = "a link" if path.is_symlink() else "a file"
        raise RunError(f"{path} is {kind}, not a {what} folder; refusing to replace it (choose another --out)")
    foreign = sorted(e.name for e in path.iterdir() if not any(fnmatch(e.name, p) for p in (*own, TEMPORARY)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunError(f"{path} holds files tca4rec does not write in a {what} folder ({shown}); refusing to "
                       "delete it: move them away or choose another --out")


def remove_own_folder(path: str | os.PathLike, own: Sequence[str], what: str) -> None:
    """Delete ``path`` after ``check_own_folder`` passed: only the project's own files go."""
    check_own_folder(path, own, what)
    shutil.rmtree(path)

"""Atomic file writes: a crash never leaves a half-written dataset, checkpoint or report.

Everything is written to a temporary file in the destination folder, flushed to disk, and
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows).

The one deletion the project does (``--overwrite`` of a run folder) goes through
``remove_own_folder``: it deletes a folder only if every entry in it is one the project
writes, so no command can delete a file a person put there. Every other output path of
every command goes through ``check_output`` before any work starts: a path that exists is
written only if it is recognisably that command's own earlier output.

Errors name the path the user gave, never the hidden temporary file beside it, and a
safetensors file cut short is a one-line ``RunError`` (``load_tensors``).

One writer per output: ``exclusive_use`` lets one process at a time train a run folder, decode
into it or append to a recommendations file; a second one (the same study started twice, a
``--resume`` beside a running training) is refused in one line naming the path and the pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import IO, Any

from tca4rec.errors import RunError

TEMPORARY = ".*.tmp"  # what the atomic writers below leave behind when a process is killed

# The process's umask, read once (os.umask can only be read by setting it): what a plain
# open() or mkdir() would apply, so that atomic writes get the same permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); a result should read like any other file
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with _naming(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError about the hidden temporary sibling of ``path`` (a read-only folder) names ``path``
    instead: the user gave that path and has never seen the temporary name."""
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from None


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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, computed once per process and file version (a run resolves its
    LLM and stamps its weights several times; a changed file has another size or time and is hashed again)."""
    stat = os.stat(path)
    return _sha256(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def load_tensors(path: str | os.PathLike) -> dict:
    """The tensors of a safetensors file (never a pickle); a file cut short or not safetensors at all
    is a RunError naming it, not a SafetensorError traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as e:
        raise RunError(f"cannot load {path}: not a readable safetensors file ({e}); cut short or replaced? "
                       "Restore it or train the run again") from None


def atomic_save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors, atomically (safe to load: no pickle)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then rename it onto ``path`` (which must not exist)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        _plain_permissions(tmp)
        with _naming(path):
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _plain_permissions(folder: Path) -> None:
    """Widen what a library wrote privately inside ``folder`` (safetensors writes 0600: a LoRA
    adapter saved by peft was unreadable to the group) to what a plain write would give."""
    for root, dirs, files in os.walk(folder):
        for name, plain in [(d, 0o777 & ~_UMASK) for d in dirs] + [(f, 0o666 & ~_UMASK) for f in files]:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                os.chmod(entry, os.stat(entry).st_mode & 0o7777 | plain)


def check_own_folder(path: str | os.PathLike, own: Sequence[str], what: str) -> None:
    """RunError unless ``path`` is a real folder whose every top-level entry matches one of the
    ``own`` name patterns (``fnmatch``) of a ``what``; the message names what is in the way."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        kind = "a link" if path.is_symlink() else "a file"
        raise RunError(f"{path} is {kind}, not a {what} folder; refusing to replace it (choose another --out)")
    foreign = _foreign(path, own)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunError(f"{path} holds files tca4rec does not write in a {what} folder ({shown}); refusing to "
                       "delete it: move them away or choose another --out")


def remove_own_folder(path: str | os.PathLike, own: Sequence[str], what: str) -> None:
    """Delete ``path`` after ``check_own_folder`` passed: only the project's own files go."""
    check_own_folder(path, own, what)
    shutil.rmtree(path)


def _foreign(folder: Path, own: Sequence[str]) -> list[str]:
    """The entries of ``folder`` not named like any of the ``own`` patterns (nor a temporary file)."""
    return sorted(e.name for e in folder.iterdir() if not any(fnmatch(e.name, p) for p in (*own, TEMPORARY)))


def check_output(path: str | os.PathLike, option: str, ours: Callable[[Path], bool] | None = None) -> Path:
    """The one rule for every path a command writes, checked before any work starts: the path does
    not exist yet, or ``ours`` recognises it as this command's own earlier output (a file to resume,
    a report to redo), which may be written again. Anything else there, a person's file, a folder
    where a file goes, a link, is a RunError naming ``option`` and the path: a command never
    replaces what a person wrote."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return path
    if ours is not None and not path.is_symlink() and ours(path):
        return path
    kind = "a link" if path.is_symlink() else "a folder" if path.is_dir() else "a file"
    raise RunError(f"{option} {path}: {kind} that this command did not write is there; refusing to replace it "
                   f"(move it away or choose another {option})")


def own_folder(own: Sequence[str]) -> Callable[[Path], bool]:
    """``ours`` of ``check_output`` for a folder output: a folder whose every entry is named like ``own``."""
    return lambda path: path.is_dir() and not _foreign(path, own)


def jsonl_records(keys: Collection[str]) -> Callable[[Path], bool]:
    """``ours`` of ``check_output`` for a JSON-lines output: a file whose every line is an object with
    exactly ``keys`` (an empty file too)."""
    def recognise(path: Path) -> bool:
        try:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested past the reader's depth
            return False
        return all(isinstance(r, dict) and set(r) == set(keys) for r in records)
    return recognise


def json_record(key: str, value: object) -> Callable[[Path], bool]:
    """``ours`` of ``check_output`` for a JSON output: an object whose ``key`` holds ``value``."""
    def recognise(path: Path) -> bool:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested past the reader's depth
            return False
        return isinstance(record, dict) and record.get(key) == value
    return recognise


@contextlib.contextmanager
def exclusive_use(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``path`` for ``what`` ("train", "evaluate test", ...) until the block ends; RunError if
    another process holds it for the same ``what``.

    An advisory lock (``flock``, released by the OS when its process dies, so a killed run never
    leaves a stale lock) on a file named by a hash of the resolved path, in the temporary folder:
    nothing is added to the output itself, and the lock outlives an ``--overwrite`` that
    replaces the folder. Under torchrun / accelerate launch only the main process (``RANK`` 0)
    takes it; the others run under it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    key = hashlib.sha256(f"{Path(path).resolve()}\0{what}".encode()).hexdigest()[:24]
    folder = Path(tempfile.gettempdir()) / f"tca4rec-locks-{os.getuid()}"  # per user: another's is not writable
    folder.mkdir(exist_ok=True)
    with open(folder / f"{key}.lock", "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RunError(f"{path} is in use: another tca4rec process (pid {holder}) is running {what} on it; "
                           "wait for it to finish or stop it") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

"""Command line: ``tca4rec <group> <command>``, a thin layer over the Python API.

Each area registers its commands from its own module (``cli/data.py``, ``cli/cf.py``, ...),
so adding a command never touches this file. Command modules import the API inside each
command's function, the one place the package does so: the API loads torch and
transformers (seconds), and ``--help`` or a mistyped option must answer at once.

Errors the library raises on purpose (``TCA4RecError``) and refusals of the file system
(``OSError``: a read-only folder, a file where a folder should be, a full disk) print as one
line naming the path, with exit status 2; ``--debug`` shows the traceback. So does running out
of memory (torch's CUDA and CPU allocators, numpy), with what would need less.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from tca4rec.errors import TCA4RecError
from tca4rec.validate import check_seed

# Modules that define ``register(subparsers)``; order = order in ``--help``.
COMMAND_MODULES = ("data", "cf", "llm", "fuse", "serve", "bench", "study")

EPILOG = """examples:
  tca4rec data synth --out data/synth
  tca4rec cf train --data data/synth --model sasrec --out runs/sasrec
  tca4rec train --data data/synth --host tallrec --cf runs/sasrec --alpha 0.1 --out runs/tca
  tca4rec evaluate --run runs/tca --split test
  tca4rec demo
"""


_OS_HINTS = {PermissionError: " (is it read-only?)", NotADirectoryError: " (a file stands where a folder is needed)",
             FileExistsError: " (a file stands where a folder is needed?)", IsADirectoryError: " (a folder, not a file)"}
# torch.OutOfMemoryError (CUDA) says "out of memory"; its CPU allocator raises a plain RuntimeError
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|not enough memory", re.IGNORECASE)
_OOM_HINT = "a smaller --batch-size, fewer --beams or a smaller model needs less (--debug shows where)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tca4rec",
        description="LLM generative recommendation with token-level collaborative alignment (TCA4Rec).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"tca4rec.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except TCA4RecError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (read-only folder, a file where a folder goes, a full disk)
        if args.debug:
            raise
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        hint = _OS_HINTS.get(type(e), "")
        print(f"error: {where + ': ' if where else ''}{e.strerror or e}{hint}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if args.debug or not (isinstance(e, MemoryError) or _OUT_OF_MEMORY.search(str(e))):
            raise
        print(f"error: out of memory ({_memory_reason(e)}): {_OOM_HINT}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _memory_reason(error: BaseException) -> str:
    """The allocator's first line, without torch's C++ source location."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", lines[0])[:300]


def seed_arg(text: str) -> int:
    """The argparse type of a ``--seed`` that no config checks (the benchmarks')."""
    try:
        return check_seed(int(text), "--seed")
    except ValueError:  # not an integer, or not a seed (ConfigError is a ValueError)
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed (an integer in 0..{2**32 - 1:,})") from None


def examples(*lines: str) -> str:
    """An ``epilog`` listing example invocations, for every command's ``--help``."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_command(sub, name: str, func, help: str, example_lines: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Add one command with help text and examples; ``func(args)`` runs it."""
    p = sub.add_parser(name, help=help, description=help, epilog=examples(*example_lines) if example_lines else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


if __name__ == "__main__":
    sys.exit(main())

"""Exceptions users see. The CLI turns any ``TCA4RecError`` into a one-line message.

Every error raised on bad input derives from ``TCA4RecError`` so that the command line can
print it without a traceback, and a Python user can catch the whole family at once.
"""

from __future__ import annotations


class TCA4RecError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(TCA4RecError, ValueError):
    """An invalid option or argument (alpha outside [0, 1], beam width < 1, ...)."""


class RunError(TCA4RecError):
    """A run folder that is missing, incomplete, foreign or would be overwritten."""


class DatasetError(TCA4RecError):
    """Bad dataset input. The message names the file, and where known the row and field.

    ``row`` is the 1-based data row (the header is row 0) of a CSV file, or the 1-based
    line of a JSON-lines file.
    """

    def __init__(self, message: str, *, file: object = None, row: int | None = None,
                 field: str | None = None) -> None:
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field
        where = []
        if self.file is not None:
            where.append(self.file)
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")

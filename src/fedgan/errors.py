"""The errors a user can act on.

Boundaries (files, CSVs, the command line) raise these so the CLI can print one line that
names the file and the problem, instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class FedGANError(Exception):
    """Anything a user can fix: bad input, bad configuration, a missing file."""


class DataError(FedGANError):
    """A problem with one input file; `str()` is the one-line `path: problem` report."""

    def __init__(self, path: str | Path, problem: str, kind: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.kind = kind or problem  # a short category for summaries ("truncated", "not an image")
        super().__init__(f"{self.path}: {problem}")

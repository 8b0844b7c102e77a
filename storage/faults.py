"""Storage faults: which SQLite errors are worth waiting out, and a file that changed under us."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.errors import DatabaseReplaced

WRITE_FAULTS = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})
"""Disk full and I/O errors: the transaction was rolled back and may succeed once the disk
has room (or the device answers) again."""


@dataclass(frozen=True, kw_only=True)
class FaultPolicy:
    """How long writes wait out a full disk or failed writes before the runs are failed."""

    budget: float = 120.0
    """Seconds of failed attempts after which the write fails for good."""
    first_delay: float = 0.05
    max_delay: float = 5.0


def is_write_fault(error: sqlite3.Error) -> bool:
    """A full disk or an I/O error (any extended code of either)."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in WRITE_FAULTS


def backoff(attempt: int, waited: float, policy: FaultPolicy) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None once the budget is spent."""
    left = policy.budget - waited
    if left <= 0:
        return None
    return min(policy.first_delay * 2.0 ** (attempt - 1), policy.max_delay, left)


@dataclass(frozen=True)
class FileIdentity:
    """The database file as opened (device and inode): checked before every commit, so a
    file deleted or replaced under the process is noticed before anything else is written."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        found = path.stat()
        return cls(path, found.st_dev, found.st_ino)

    def check(self) -> None:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            raise DatabaseReplaced(self._message("deleted")) from None
        if (found.st_dev, found.st_ino) != (self.device, self.inode):
            raise DatabaseReplaced(self._message("replaced by another file"))

    def _message(self, what: str) -> str:
        return (
            f"the database file {self.path} was {what} while dagbot was using it; dagbot "
            "stopped writing so that no run is recorded twice or lost. Restore the file (or "
            "point DATABASE_URL at the right one) and start dagbot again."
        )

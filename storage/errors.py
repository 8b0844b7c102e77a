"""Errors of the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """The run store could not be opened or used."""


class UnsupportedDatabaseURL(StorageError):
    """DATABASE_URL names a database dagbot cannot use."""


class DatabaseUnusable(StorageError):
    """The database file is corrupt, is not dagbot's, or was written by a newer dagbot."""


class DatabaseReplaced(StorageError):
    """The database file was deleted or replaced under the running process."""


class StorageFull(StorageError):
    """Writes kept failing (disk full or I/O errors) for longer than the fault budget."""


class LeaseLost(StorageError):
    """This process no longer owns the run (its lease expired and another process took it)."""

    @classmethod
    def of(cls, run_id: str) -> LeaseLost:
        return cls(
            f"run {run_id} is no longer owned by this process (its lease expired and another "
            "process took it over); this process stopped working on it"
        )

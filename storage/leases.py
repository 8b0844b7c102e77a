"""Who owns a run: a lease in the database (owner, kind, expiry), renewed while it is worked on.

Every unfinished run is leased to one live process. A store handle is one owner: the runs it
creates or claims are leased to it, and every transition it commits is checked against the
lease in the same transaction, so a process that lost a run (paused past its lease, cut off
from the database) can record nothing more for it.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_LEASE_SECONDS = 30.0
CLAIM_BATCH = 100
"""Runs claimed at most per claim: a survivor takes over a dead replica's runs in batches."""


class OwnerKind(StrEnum):
    """Bots take over each other's runs; a terminal's runs are only ever taken by a terminal."""

    BOT = "bot"
    TERMINAL = "terminal"


def new_owner_id() -> str:
    """Unique per store handle; host and pid make `runs <id>` say who holds a run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, kw_only=True)
class Owner:
    id: str = field(default_factory=new_owner_id)
    kind: OwnerKind = OwnerKind.BOT
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    """How long a run stays ours without a renewal: the takeover time after a crash."""


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A run's lease as stored."""

    owner: str | None
    kind: OwnerKind
    expires_at: float | None

"""A chat message as the prompts build it; kept apart from the LLM client so that reading
settings or ranking tools never imports the OpenAI SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, kw_only=True)
class Message:
    role: Role
    content: str

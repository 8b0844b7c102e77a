"""Slack's requests as plain data: mentions, /dagbot commands and button presses, parsed purely.

Slack's JSON is validated with pydantic at this boundary; what comes out are frozen dataclasses.
A payload that is not what Slack sends is logged and ignored (None), never half-used.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.wording import FEEDBACK_BAD, FEEDBACK_GOOD

log = logging.getLogger("dagbot.intake")

COMMAND = "/dagbot"
CANCEL_ACTION = "dagbot_cancel"
RETRY_ACTION = "dagbot_retry"
FEEDBACK_ACTION = "dagbot_feedback"
APPROVE_ACTION = "dagbot_approve"
DENY_ACTION = "dagbot_deny"


# -- payloads (the boundary: Slack's JSON, validated) ----------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _MentionEvent(_Payload):
    ts: str
    channel: str
    text: str = ""
    user: str | None = None
    thread_ts: str | None = None
    bot_id: str | None = None
    subtype: str | None = None


class _Authorization(_Payload):
    team_id: str | None = None
    user_id: str | None = None
    is_bot: bool = False


class _EventEnvelope(_Payload):
    event_id: str
    team_id: str
    event: _MentionEvent
    authorizations: list[_Authorization] = []


class _CommandPayload(_Payload):
    team_id: str
    channel_id: str
    user_id: str
    trigger_id: str
    text: str = ""


class _Id(_Payload):
    id: str


class _Container(_Payload):
    channel_id: str | None = None
    message_ts: str | None = None
    thread_ts: str | None = None


class _Message(_Payload):
    ts: str | None = None
    thread_ts: str | None = None


class _Action(_Payload):
    action_id: str
    value: str = ""
    action_ts: str = ""


class _ActionPayload(_Payload):
    user: _Id
    trigger_id: str = ""
    actions: list[_Action] = Field(min_length=1)
    channel: _Id | None = None
    container: _Container = _Container()
    message: _Message = _Message()


# -- parsed requests (plain data inside) -----------------------------------------------------------


def thread_key(team_id: str, channel: str, thread_ts: str) -> str:
    """The key under which every run of one Slack thread is stored."""
    return f"{team_id}:{channel}:{thread_ts}"


@dataclass(frozen=True, kw_only=True)
class Mention:
    event_id: str
    team_id: str
    channel: str
    user: str
    thread_ts: str
    """Root of the thread the replies go into: the mention itself, or the thread it was made in."""
    ts: str
    """The mention message itself (what an acknowledgement reacts to)."""
    goal: str

    @property
    def thread_key(self) -> str:
        return thread_key(self.team_id, self.channel, self.thread_ts)


class CommandKind(StrEnum):
    HELP = "help"
    LIST = "list"
    CANCEL = "cancel"
    START = "start"


@dataclass(frozen=True, kw_only=True)
class Command:
    kind: CommandKind
    argument: str = ""


@dataclass(frozen=True, kw_only=True)
class SlashCommand:
    team_id: str
    channel: str
    user: str
    trigger_id: str
    command: Command


class PressKind(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    FEEDBACK = "feedback"
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, kw_only=True)
class Press:
    kind: PressKind
    run_id: str
    user: str
    channel: str | None
    thread_ts: str | None
    delivery_id: str = ""
    """Names this press: a replay of it (same trigger and action time) carries the same id."""
    vote: str = ""
    """For feedback: `good` or `bad`."""
    task_id: str = ""
    """For approve and deny: the task awaiting approval."""


# -- pure parsing ----------------------------------------------------------------------------------


def strip_bot_mentions(text: str, bot_user_id: str | None) -> str:
    """The text without the bot's own `<@U…>` / `<@U…|name>` mentions, trimmed."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return text.strip()


def unescape(text: str) -> str:
    """Slack's text with its three escaped characters back as typed (`&amp;` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def is_from_bot(event: Mapping[str, Any], bot_user_id: str | None) -> bool:
    """Messages written by bots, this one included, never start runs."""
    return bool(
        event.get("bot_id")
        or event.get("subtype") == "bot_message"
        or event.get("bot_profile")
        or (bot_user_id is not None and event.get("user") == bot_user_id)
    )


def parse_mention(body: Mapping[str, Any], bot_user_id: str | None) -> Mention | None:
    """An `app_mention` delivery as a Mention; None for bot messages and malformed payloads."""
    event = body.get("event")
    if not isinstance(event, Mapping) or is_from_bot(event, bot_user_id):
        return None
    try:
        envelope = _EventEnvelope.model_validate(body)
    except ValidationError as error:
        log.warning("ignoring a malformed app_mention delivery: %s", _first_problem(error))
        return None
    if envelope.event.user is None:
        return None
    # The authorization names the workspace that installed dagbot and its bot user: right in
    # Slack Connect channels (where the envelope's team is another's) and known even when
    # auth.test could not be asked.
    authorization = envelope.authorizations[0] if envelope.authorizations else None
    if bot_user_id is None and authorization is not None and authorization.is_bot:
        bot_user_id = authorization.user_id
    if is_from_bot(event, bot_user_id):
        return None
    return Mention(
        event_id=envelope.event_id,
        team_id=(authorization.team_id if authorization else None) or envelope.team_id,
        channel=envelope.event.channel,
        user=envelope.event.user,
        thread_ts=envelope.event.thread_ts or envelope.event.ts,
        ts=envelope.event.ts,
        goal=unescape(strip_bot_mentions(envelope.event.text, bot_user_id)),
    )


def parse_command_text(text: str) -> Command:
    """`help`, `list` and `cancel <id>` alone are subcommands; any other text is a goal."""
    words = text.split()
    if not words or (len(words) == 1 and words[0].lower() == "help"):
        return Command(kind=CommandKind.HELP)
    first = words[0].lower()
    if first == "list" and len(words) == 1:
        return Command(kind=CommandKind.LIST)
    if first == "cancel" and len(words) <= 2:
        return Command(kind=CommandKind.CANCEL, argument=words[1] if len(words) == 2 else "")
    return Command(kind=CommandKind.START, argument=text.strip())


def parse_command(payload: Mapping[str, Any]) -> SlashCommand | None:
    """A `/dagbot` request as a SlashCommand; None when the payload is malformed."""
    try:
        parsed = _CommandPayload.model_validate(payload)
    except ValidationError as error:
        log.warning("ignoring a malformed /dagbot request: %s", _first_problem(error))
        return None
    return SlashCommand(
        team_id=parsed.team_id,
        channel=parsed.channel_id,
        user=parsed.user_id,
        trigger_id=parsed.trigger_id,
        command=parse_command_text(unescape(parsed.text)),
    )


PRESS_KINDS: Mapping[str, PressKind] = {
    CANCEL_ACTION: PressKind.CANCEL,
    RETRY_ACTION: PressKind.RETRY,
    FEEDBACK_ACTION: PressKind.FEEDBACK,
    APPROVE_ACTION: PressKind.APPROVE,
    DENY_ACTION: PressKind.DENY,
}
VOTES = frozenset({FEEDBACK_GOOD, FEEDBACK_BAD})


def parse_press(body: Mapping[str, Any]) -> Press | None:
    """A click on the plan message's Cancel or Retry button; None for anything else."""
    try:
        parsed = _ActionPayload.model_validate(body)
    except ValidationError as error:
        log.warning("ignoring a malformed block action: %s", _first_problem(error))
        return None
    action = parsed.actions[0]
    kind = PRESS_KINDS.get(action.action_id)
    if kind is None or not action.value:
        return None
    run_id, vote, task_id = action.value, "", ""
    if kind is PressKind.FEEDBACK:
        vote, _, run_id = action.value.partition(":")
        if vote not in VOTES or not run_id:
            return None
    elif kind in (PressKind.APPROVE, PressKind.DENY):
        run_id, _, task_id = action.value.partition(":")
        if not run_id or not task_id:
            return None
    container = parsed.container
    stamp = parsed.trigger_id or action.action_ts
    target = f"{run_id}:{task_id}" if task_id else run_id
    return Press(
        kind=kind,
        run_id=run_id,
        vote=vote,
        task_id=task_id,
        delivery_id=f"press:{kind}:{target}:{parsed.user.id}:{stamp}" if stamp else "",
        user=parsed.user.id,
        channel=parsed.channel.id if parsed.channel is not None else container.channel_id,
        thread_ts=parsed.message.thread_ts or container.thread_ts or container.message_ts,
    )


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"

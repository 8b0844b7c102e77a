"""Wires Slack requests to the intake: every listener acks at once; slow work happens afterwards."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.intake import Intake
from bot.payloads import (
    APPROVE_ACTION,
    CANCEL_ACTION,
    COMMAND,
    DENY_ACTION,
    FEEDBACK_ACTION,
    RETRY_ACTION,
)


def register_listeners(app: AsyncApp, intake: Intake) -> None:
    """Route app mentions, `/dagbot`, the plan's buttons and App Home opens to `intake`."""

    async def on_mention(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        await intake.mention(body, context.bot_user_id)

    async def on_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        # Ack first: the database (and Slack) are touched only afterwards, so a slow or locked
        # database can never make Slack drop the command.
        answer = intake.command_answer(command)
        await ack(text=answer or "", response_type="ephemeral" if answer else None)
        if answer is None:
            intake.command_later(command, respond)

    async def on_press(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        intake.press(body)

    async def on_home_opened(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        intake.home_opened(event)

    app.event("app_mention")(on_mention)
    app.command(COMMAND)(on_command)
    app.action(CANCEL_ACTION)(on_press)
    app.action(RETRY_ACTION)(on_press)
    app.action(FEEDBACK_ACTION)(on_press)
    app.action(APPROVE_ACTION)(on_press)
    app.action(DENY_ACTION)(on_press)
    app.event("app_home_opened")(on_home_opened)

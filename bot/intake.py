"""Intake: Slack mentions, /dagbot commands, button presses and App Home opens become engine calls.

The thin async shell over `bot.payloads` (parsing) and `bot.replies` (wording): it claims each
delivery once, submits runs, and owns every background task it starts (bolt forgets the
listeners it fires, so nothing here is left unreferenced).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.payloads import (
    CommandKind,
    Mention,
    Press,
    PressKind,
    SlashCommand,
    parse_command,
    parse_mention,
    parse_press,
    thread_key,
)
from bot.replies import (
    approval_refusal,
    cancel_refusal,
    cancel_result,
    decision_reply,
    goal_problem,
    help_text,
    list_text,
    mention,
    press_noop,
    press_refusal,
    requested_text,
)
from bot.slack_client import error_code, is_transient
from bot.wording import STEERING_RECEIVED
from scheduler.dag.engine import Engine
from scheduler.dag.state import Run

log = logging.getLogger("dagbot.intake")
_T = TypeVar("_T")

LIST_LIMIT = 10
# While Slack is unreachable, a /dagbot goal waits for it (its response_url lasts 30 minutes).
OUTAGE_PATIENCE = 30 * 60.0
OUTAGE_FIRST_RETRY = 0.25
OUTAGE_MAX_RETRY = 30.0


class HomePublisher(Protocol):
    async def refresh_home(self, user_id: str) -> None: ...


class Respond(Protocol):
    """bolt's `respond`: answers a command through its response_url."""

    def __call__(self, text: str = ..., *, response_type: str | None = ...) -> Awaitable[Any]: ...


async def _once_slack_answers(call: Callable[[], Awaitable[_T]], what: str) -> _T:
    """`call()`, tried again with backoff while Slack is unreachable or failing transiently.

    A /dagbot goal is only in the request that carried it: rather than lose it during an outage,
    wait (up to OUTAGE_PATIENCE) and carry it out once Slack answers again.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + OUTAGE_PATIENCE
    delay = OUTAGE_FIRST_RETRY
    while True:
        try:
            return await call()
        except Exception as error:
            if not is_transient(error) or loop.time() + delay > give_up:
                raise
            log.warning("Slack unavailable (%s); %s waits for it", error_code(error), what)
        await asyncio.sleep(delay)
        delay = min(delay * 2, OUTAGE_MAX_RETRY)


class TaskSet:
    """Named background tasks, referenced until they end; a failure is logged, never lost.

    One request's task failing must not stop the bot, so a failure is reported rather than
    propagated; shutdown cancels and awaits whatever is left.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        if self._closed:
            work.close()
            log.warning("%s is shutting down; dropped %s", self._name, name)
            return
        task = asyncio.create_task(work, name=f"{self._name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=error)

    async def wait_idle(self) -> None:
        """Return once no task is left, including tasks spawned meanwhile."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


class Intake:
    """Turns parsed Slack requests into engine calls; slow work runs in owned background tasks."""

    def __init__(
        self,
        engine: Engine,
        client: AsyncWebClient,
        home: HomePublisher,
        *,
        max_goal_chars: int,
        approvers: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.client = client
        self.home = home
        self.max_goal_chars = max_goal_chars
        self.approvers = approvers
        """DAGBOT_APPROVERS: who may decide on any run's tasks, besides its requester."""
        self.tasks = TaskSet("dagbot intake")

    async def wait_idle(self) -> None:
        await self.tasks.wait_idle()

    async def aclose(self) -> None:
        await self.tasks.aclose()

    # -- mentions ----------------------------------------------------------------------------

    async def mention(self, body: Mapping[str, Any], bot_user_id: str | None) -> None:
        """Start a run for an `app_mention` (a follow-up when its thread already holds one)."""
        mention = parse_mention(body, bot_user_id)
        if mention is None:
            return
        problem = goal_problem(mention.goal, self.max_goal_chars, source="mention")
        if problem is not None:
            if await self.engine.claim_delivery(mention.event_id):
                self.tasks.spawn(
                    self._post(mention.channel, mention.thread_ts, problem),
                    f"answer {mention.event_id}",
                )
            return
        parent = await self.engine.latest_run_in_thread(mention.thread_key)
        meta = _meta(mention.team_id, mention.channel, mention.thread_ts, mention.user, "mention")
        if parent is not None and not parent.status.finished:
            # The run is still going: the message steers it, whichever process owns it (the
            # owner reads it from the store); past its final step it becomes a follow-up run.
            steered = await self.engine.steer(
                parent.id,
                mention.goal,
                requester=mention.user,
                meta=meta,
                delivery_id=mention.event_id,
            )
            if steered is None:
                log.info("ignoring redelivered event %s", mention.event_id)
                return
            if steered:
                log.info("run %s steered by a mention from %s", parent.id, mention.user)
                self.tasks.spawn(self._acknowledge(mention), f"acknowledge {mention.event_id}")
                return
            # It ended meanwhile: a follow-up run, as for any finished run.
        # Claiming the event id and recording the run are one transaction: a crash between
        # them can neither lose the mention nor let Slack's redelivery start a second run.
        run = await self.engine.submit(
            mention.goal,
            requester=mention.user,
            thread_key=mention.thread_key,
            parent_run_id=parent.id if parent is not None else None,
            meta=meta,
            delivery_id=mention.event_id,
        )
        if run is None:
            log.info("ignoring redelivered event %s", mention.event_id)
            return
        log.info("run %s started from a mention by %s", run.id, mention.user)

    async def _acknowledge(self, mention: Mention) -> None:
        """React to a steering mention, so its author sees at once that the run has it."""
        try:
            await self.client.reactions_add(
                channel=mention.channel, timestamp=mention.ts, name=STEERING_RECEIVED
            )
        except SlackApiError as error:
            if error_code(error) != "already_reacted":
                log.warning("could not acknowledge %s: %s", mention.event_id, _slack_error(error))

    async def _post(self, channel: str, thread_ts: str, text: str) -> None:
        try:
            await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text)
        except SlackApiError as error:
            log.warning("could not answer in %s: %s", channel, _slack_error(error))

    # -- /dagbot ------------------------------------------------------------------------------

    async def command(self, payload: Mapping[str, Any], respond: Respond) -> str | None:
        """Handle `/dagbot …`: the text to answer at once (ephemeral), or None if it comes later.

        Equivalent to `command_answer` then, when that is None, `command_later`.
        """
        answer = self.command_answer(payload)
        if answer is None:
            self.command_later(payload, respond)
        return answer

    def command_answer(self, payload: Mapping[str, Any]) -> str | None:
        """What `/dagbot …` answers at once, without I/O (the ack carries it); None when the
        command is carried out afterwards by `command_later`."""
        parsed = parse_command(payload)
        if parsed is None:
            return "Slack sent a request I could not read; please try again."
        command = parsed.command
        if command.kind is CommandKind.HELP:
            return help_text(self.max_goal_chars)
        if command.kind is CommandKind.START:
            return goal_problem(command.argument, self.max_goal_chars, source="command")
        return None

    def command_later(self, payload: Mapping[str, Any], respond: Respond) -> None:
        """Carry out `/dagbot list|cancel|<goal>` in the background, once per trigger: every
        database write happens here, after the ack."""
        parsed = parse_command(payload)
        if parsed is not None:
            self.tasks.spawn(self._command(parsed, respond), f"/dagbot for {parsed.user}")

    async def _command(self, parsed: SlashCommand, respond: Respond) -> None:
        if not await self.engine.claim_delivery(f"trigger:{parsed.trigger_id}"):
            log.info("ignoring repeated /dagbot trigger %s", parsed.trigger_id)
            return
        command = parsed.command
        if command.kind is CommandKind.LIST:
            await self._list(parsed.user, respond)
        elif command.kind is CommandKind.CANCEL:
            await self._cancel(parsed.user, command.argument, respond)
        elif command.kind is CommandKind.START:
            await self._start(parsed, respond)

    async def _start(self, parsed: SlashCommand, respond: Respond) -> None:
        goal = parsed.command.argument
        try:
            posted = await _once_slack_answers(
                lambda: self.client.chat_postMessage(
                    channel=parsed.channel,
                    text=requested_text(parsed.user, goal),
                    unfurl_links=False,
                    unfurl_media=False,
                ),
                f"the /dagbot goal of {parsed.user}",
            )
        except SlackApiError as error:
            await respond(
                f"I could not post in this channel ({_slack_error(error)}), so nothing was "
                "started. Invite me with `/invite @dagbot` or mention me where I am a member.",
                response_type="ephemeral",
            )
            return
        root = str(posted["ts"])
        run = await self.engine.submit(
            goal,
            requester=parsed.user,
            thread_key=thread_key(parsed.team_id, parsed.channel, root),
            meta=_meta(parsed.team_id, parsed.channel, root, parsed.user, "command"),
        )
        log.info("run %s started from /dagbot by %s", run.id, parsed.user)

    async def _list(self, user: str, respond: Respond) -> None:
        runs = await self.engine.recent_runs(requester=user, limit=LIST_LIMIT)
        permalinks: dict[str, str] = {}
        for run in runs:
            link = await self._permalink(run)
            if link is not None:
                permalinks[run.id] = link
        await respond(list_text(runs, permalinks), response_type="ephemeral")

    async def _permalink(self, run: Run) -> str | None:
        known = run.meta.get("permalink")
        if isinstance(known, str):
            return known
        channel, root = run.meta.get("channel"), run.meta.get("thread_ts")
        if not isinstance(channel, str) or not isinstance(root, str):
            return None
        try:
            answer = await self.client.chat_getPermalink(channel=channel, message_ts=root)
        except SlackApiError as error:
            log.info("no permalink for run %s: %s", run.id, _slack_error(error))
            return None
        link = answer.get("permalink")
        return link if isinstance(link, str) else None

    async def _cancel(self, user: str, argument: str, respond: Respond) -> None:
        run = await self.engine.find_run(argument)
        refusal = cancel_refusal(argument, run, user)
        if refusal is not None or run is None:
            await respond(refusal or "", response_type="ephemeral")
            return
        cancelled = await self.engine.cancel(run.id)
        await respond(cancel_result(run, cancelled), response_type="ephemeral")

    # -- buttons and App Home --------------------------------------------------------------------

    def press(self, body: Mapping[str, Any]) -> None:
        """Act on a Cancel / Retry / feedback click in the background (acked at once)."""
        press = parse_press(body)
        if press is not None:
            self.tasks.spawn(self._press(press), f"{press.kind} {press.run_id} by {press.user}")

    async def _press(self, press: Press) -> None:
        # A replayed press (same trigger) is claimed already: it changes nothing.
        if press.delivery_id and not await self.engine.claim_delivery(press.delivery_id):
            log.info("ignoring a replayed %s press on run %s", press.kind, press.run_id)
            return
        run = await self.engine.get_run(press.run_id)
        if press.kind in (PressKind.APPROVE, PressKind.DENY):
            await self._decide(press, run)
            return
        refusal = press_refusal(press, run)
        if refusal is not None or run is None:
            await self._whisper(press, refusal or "", run)
            return
        if press.kind is PressKind.FEEDBACK:
            changed = await self.engine.record_feedback(run.id, press.user, press.vote)
            log.info(
                "feedback %s on run %s by %s (new: %s)", press.vote, run.id, press.user, changed
            )
            return
        if press.kind is PressKind.CANCEL:
            done = await self.engine.cancel(run.id)
        else:
            done = await self.engine.retry_failed(run.id)
        log.info("%s of run %s by %s: %s", press.kind, run.id, press.user, done)
        if not done:
            await self._whisper(press, press_noop(press, run), run)

    async def _decide(self, press: Press, run: Run | None) -> None:
        refusal = approval_refusal(press, run, self.approvers)
        if refusal is not None or run is None:
            log.info(
                "refused a %s of %s/%s by %s", press.kind, press.run_id, press.task_id, press.user
            )
            await self._whisper(press, refusal or "", run)
            return
        # Recorded in the database, whichever process got the press: the run's owner acts on it.
        decided = await self.engine.decide(
            run.id, press.task_id, approve=press.kind is PressKind.APPROVE, by=mention(press.user)
        )
        log.info(
            "%s of task %s of run %s by %s: %s",
            press.kind,
            press.task_id,
            run.id,
            press.user,
            decided[0].decision if decided is not None else "not awaiting approval",
        )
        reply = decision_reply(press, decided)
        if reply is not None:
            await self._whisper(press, reply, run)

    async def _whisper(self, press: Press, text: str, run: Run | None) -> None:
        meta = run.meta if run is not None else {}
        channel = meta.get("channel", press.channel)
        root = meta.get("thread_ts", press.thread_ts)
        if not isinstance(channel, str):
            return
        try:
            await self.client.chat_postEphemeral(
                channel=channel,
                user=press.user,
                text=text,
                thread_ts=root if isinstance(root, str) else None,
            )
        except SlackApiError as error:
            log.warning("could not answer %s privately: %s", press.user, _slack_error(error))

    def home_opened(self, event: Mapping[str, Any]) -> None:
        """Refresh the App Home of whoever opened its Home tab."""
        user = event.get("user")
        if event.get("tab", "home") == "home" and isinstance(user, str):
            self.tasks.spawn(self.home.refresh_home(user), f"home of {user}")


def _meta(team_id: str, channel: str, root: str, user: str, source: str) -> dict[str, object]:
    return {
        "team_id": team_id,
        "channel": channel,
        "thread_ts": root,
        "user": user,
        "source": source,
    }


def _slack_error(error: SlackApiError) -> str:
    return error_code(error)

"""Executors for `llm` and `summary` tasks: one plain-text completion each.

Earlier outputs reach the model as delimited data blocks, cut to a character budget, rather than
pasted into the instruction: the instruction stays the planner's words and tool output cannot pose
as part of it (see scheduler.planning.prompts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import from_json

from domain.vocabulary import TaskStatus
from scheduler.dag.drafts import DraftSink
from scheduler.dag.executors import TaskContext
from scheduler.dag.graph import ancestors
from scheduler.dag.refs import REFERENCE
from scheduler.dag.state import TaskState
from scheduler.errors import AnotherRound, TaskError
from scheduler.planning.llm import LLM, Completion
from scheduler.planning.prompts import (
    StepFailure,
    StepOutput,
    llm_step_messages,
    share_budget,
    summary_messages,
    truncate,
)

DEFAULT_INPUT_BUDGET = 24_000
"""Characters of earlier outputs sent with one step, shared among them."""
ERROR_BUDGET = 500
"""Characters of each failed task's error shown to the summary."""
MIN_BUDGET = 200
CUT_OFF_MARKER = "\n\n[... the answer was cut off at the model's output limit]"
DECISION_SCHEMA_NAME = "dagbot_answer"


def decision_schema(*, may_replan: bool) -> dict[str, Any]:
    """The final step's strict JSON schema: answer, or (while rounds are left) ask for another.

    `action` comes first so that the answer can be shown while it is written.
    """
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["action", "answer", "reason"],
        "properties": {
            "action": {
                "type": "string",
                "enum": ["answer", "replan"] if may_replan else ["answer"],
            },
            "answer": {
                "type": "string",
                "description": 'The final answer in Markdown when action is "answer"; else empty.',
            },
            "reason": {
                "type": "string",
                "description": 'When action is "replan": what is missing and what the next steps '
                "should find out; else empty.",
            },
        },
    }


class Decision(BaseModel):
    """The final step's answer, read leniently (servers without strict mode may drop fields)."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["answer", "replan"]
    answer: str = ""
    reason: str = ""


class AnswerStream:
    """Hands on the `answer` field of a streamed decision as it is written.

    The JSON is parsed afresh as it grows (pydantic_core's partial mode gives the longest
    complete prefix of an unfinished string), and only what the answer gained is passed on;
    nothing goes out unless the action is "answer".
    """

    def __init__(self, emit: DraftSink) -> None:
        self._emit = emit
        self._raw = ""
        self.sent = ""

    def __call__(self, piece: str) -> None:
        self._raw += piece
        try:
            partial = from_json(self._raw, allow_partial="trailing-strings")
        except ValueError:
            return
        if not isinstance(partial, dict) or partial.get("action") != "answer":
            return
        answer = partial.get("answer")
        if (
            isinstance(answer, str)
            and len(answer) > len(self.sent)
            and answer.startswith(self.sent)
        ):
            self._emit(answer[len(self.sent) :])
            self.sent = answer


def decision_from(completion: Completion) -> Decision:
    """The final step's decision from its completion (as text when the server ignored the
    schema); a refusal or an empty answer is a TaskError."""
    if completion.refusal:
        raise TaskError(f"The model declined this step: {completion.refusal.strip()}")
    content = (completion.content or "").strip()
    if completion.tool_calls and not content:
        raise TaskError(tool_call_message(completion.tool_calls))
    try:
        partial: Literal["trailing-strings", "off"] = (
            "trailing-strings" if completion.truncated else "off"
        )
        raw = from_json(content, allow_partial=partial) if content else None
        decision = Decision.model_validate(raw)
    except (ValueError, ValidationError):
        # Not the JSON asked for (a server without structured output): the text is the answer.
        return Decision(action="answer", answer=content)
    if completion.truncated and decision.action == "answer":
        return Decision(action="answer", answer=decision.answer.strip() + CUT_OFF_MARKER)
    return decision


def answer_text(completion: Completion) -> str:
    """The step's output from a completion; a refusal or an empty answer is a TaskError.

    An answer cut off at the length limit is kept, marked as cut: a partial result beats none.
    """
    if completion.refusal:
        raise TaskError(f"The model declined this step: {completion.refusal.strip()}")
    content = (completion.content or "").strip()
    if completion.tool_calls and not content:
        # Asking again gets the same answer: the model (or its server's chat template) wants a
        # tool, and llm steps offer none. Tool calls belong in `tool` tasks of the plan.
        raise TaskError(tool_call_message(completion.tool_calls))
    if not content:
        if completion.truncated:
            raise TaskError("The model used its whole output limit without answering.")
        raise TaskError("The model returned an empty answer.", retryable=True)
    return content + CUT_OFF_MARKER if completion.truncated else content


def tool_call_message(names: Sequence[str]) -> str:
    """What a step (or the planner) says when the model called a tool instead of answering."""
    called = ", ".join(sorted(set(names)))
    return (
        f"The model answered with a tool call ({called}) instead of text; llm steps cannot call "
        "tools. Plan the call as a tool task, or use a model or server that answers in text."
    )


def mark_references(prompt: str) -> tuple[str, list[str]]:
    """The prompt with each `{{tN}}` replaced by `[input tN]`, and the ids in order of first use."""
    seen: list[str] = []

    def replace(match: re.Match[str]) -> str:
        task_id = match.group(1)
        if task_id not in seen:
            seen.append(task_id)
        return f"[input {task_id}]"

    return REFERENCE.sub(replace, prompt), seen


def fit_outputs(outputs: Sequence[StepOutput], budget: int) -> list[StepOutput]:
    """The outputs with their texts truncated so that together they fit `budget` characters."""
    shares = share_budget([len(item.text) for item in outputs], budget)
    return [
        StepOutput(task_id=item.task_id, title=item.title, text=truncate(item.text, share))
        for item, share in zip(outputs, shares, strict=True)
    ]


@dataclass(frozen=True, kw_only=True)
class SummarySources:
    results: list[str]
    """Succeeded tasks whose outputs the summary reads, in plan order."""
    failures: list[str]
    """Upstream tasks that did not succeed, in plan order."""


def summary_sources(
    deps: Sequence[str], task_id: str, states: Mapping[str, TaskState]
) -> SummarySources:
    """What a summary reads: its succeeded dependencies, and every upstream task that failed.

    Where a dependency did not succeed, the succeeded tasks upstream of it are read instead, so
    that the summary can still give a partial answer from what did come out.
    """
    graph = {tid: list(state.spec.deps) for tid, state in states.items()}
    graph[task_id] = list(deps)

    def ok(tid: str) -> bool:
        return tid in states and states[tid].status is TaskStatus.SUCCEEDED

    chosen: set[str] = {d for d in deps if ok(d)}
    for dep in deps:
        if not ok(dep):
            chosen |= {tid for tid in ancestors(graph, dep) if ok(tid)}
    upstream = ancestors(graph, task_id)
    failed = {tid for tid in upstream if tid in states and not ok(tid)}

    def in_plan_order(ids: set[str]) -> list[str]:
        return sorted(ids, key=lambda tid: states[tid].position)

    return SummarySources(results=in_plan_order(chosen), failures=in_plan_order(failed))


def _output_of(state: TaskState) -> StepOutput:
    return StepOutput(task_id=state.id, title=state.spec.title, text=state.output or "")


class _LlmStep:
    def __init__(self, llm: LLM, *, input_budget: int = DEFAULT_INPUT_BUDGET) -> None:
        if input_budget < MIN_BUDGET:
            raise ValueError(f"input_budget must be at least {MIN_BUDGET} characters")
        self._llm = llm
        self._budget = input_budget


class LlmExecutor(_LlmStep):
    """Runs `llm` tasks: the planner's instruction, the goal, and the referenced outputs."""

    async def __call__(self, context: TaskContext) -> str:
        task = context.task
        planned = context.results.get(task.id)
        raw_prompt = planned.spec.prompt if planned is not None else None
        inputs: list[StepOutput] = []
        if raw_prompt:
            instruction, referenced = mark_references(raw_prompt)
            inputs = [
                _output_of(context.results[tid]) for tid in referenced if tid in context.results
            ]
        else:
            # No plan entry to read: use the engine's substituted prompt as it is.
            instruction = task.prompt or ""
        messages = llm_step_messages(
            goal=context.goal,
            title=task.title,
            instruction=instruction,
            inputs=fit_outputs(inputs, self._budget),
        )
        completion = await self._llm.complete_text(messages, usage=context.record_usage)
        return answer_text(completion)


class SummaryExecutor(_LlmStep):
    """Runs the `summary` task: the goal's answer from its dependencies' outputs and failures."""

    async def __call__(self, context: TaskContext) -> str:
        task = context.task
        sources = summary_sources(task.deps, task.id, context.results)
        results = [_output_of(context.results[tid]) for tid in sources.results]
        failures = [
            StepFailure(
                task_id=tid,
                title=context.results[tid].spec.title,
                status=context.results[tid].status.value,
                error=truncate(context.results[tid].error or "", ERROR_BUDGET),
            )
            for tid in sources.failures
        ]
        may_replan = context.replans_left > 0
        messages = summary_messages(
            goal=context.goal,
            note=task.prompt,
            results=fit_outputs(results, self._budget),
            failures=failures,
            replans_left=context.replans_left,
        )
        # Streamed, so that front ends can show the answer while the model writes it; the empty
        # draft first lets them get ready (find the thread, note their intent) meanwhile. The
        # decision is part of the same call: no call is added when no round is.
        context.emit_text("")
        completion = await self._llm.stream_structured(
            messages,
            name=DECISION_SCHEMA_NAME,
            schema=decision_schema(may_replan=may_replan),
            usage=context.record_usage,
            on_text=AnswerStream(context.emit_text),
        )
        decision = decision_from(completion)
        if decision.action == "replan" and may_replan:
            raise AnotherRound(decision.reason.strip() or "The results do not answer the goal yet.")
        # At the bound the schema allows only an answer; a server that ignores it still gets
        # no further round: what it said is the answer.
        text = (decision.answer or decision.reason).strip()
        if not text:
            raise TaskError("The model returned an empty answer.", retryable=True)
        return text

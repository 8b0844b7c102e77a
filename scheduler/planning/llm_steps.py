"""Executors for `llm` and `summary` tasks: one plain-text completion each.

Earlier outputs reach the model as delimited data blocks, cut to a character budget, rather than
pasted into the instruction: the instruction stays the planner's words and tool output cannot pose
as part of it (see scheduler.planning.prompts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from domain.vocabulary import TaskStatus
from scheduler.dag.executors import TaskContext
from scheduler.dag.graph import ancestors
from scheduler.dag.refs import REFERENCE
from scheduler.dag.state import TaskState
from scheduler.errors import TaskError
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
        messages = summary_messages(
            goal=context.goal,
            note=task.prompt,
            results=fit_outputs(results, self._budget),
            failures=failures,
        )
        # Streamed, so that front ends can show the answer while the model writes it; the empty
        # draft first lets them get ready (find the thread, note their intent) meanwhile.
        context.emit_text("")
        completion = await self._llm.stream_text(
            messages, usage=context.record_usage, on_text=context.emit_text
        )
        return answer_text(completion)

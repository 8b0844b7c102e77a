"""The LLM planner: goal + tool catalogue -> a valid Plan, repairing invalid answers twice at most.

Strict structured output cannot express a free-form object, so the model answers in a wire format
where each task's arguments are a JSON-encoded string (`args_json`) and every field is present
(nullable where optional). `parse_answer` turns an answer into a canonical Plan or into the exact
problems to send back; it is pure, and the planner is the thin loop around it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from scheduler.dag.catalogue import ToolSpec
from scheduler.dag.executors import PlanRequest, Revision, RevisionCause
from scheduler.dag.plan import Plan, TaskKind
from scheduler.dag.revision import merge_revision, next_task_id
from scheduler.dag.schemas import schema_problem
from scheduler.dag.validation import DEFAULT_MAX_TASKS, validate_plan
from scheduler.errors import PlanningFailed, TaskError
from scheduler.planning.llm import LLM, Completion
from scheduler.planning.messages import Message
from scheduler.planning.prompts import (
    planner_messages,
    repair_message,
    revision_messages,
    truncate,
)
from scheduler.planning.shortlist import Budget, shortlist, with_tools

log = logging.getLogger(__name__)

MAX_REPAIRS = 2
MAX_ENUM_NAMES = 250
"""Past this many tools the response schema stops listing tool names (very long enums break some
providers' structured output); validation still checks every name."""
SCHEMA_NAME = "dagbot_plan"
_ECHO_BUDGET = 2_000
"""Characters of a rejected answer echoed back in the repair conversation."""


class ToolCatalogue(Protocol):
    """Where the planner learns which tools exist (scheduler.tools.toolbox.Toolbox fits)."""

    async def catalogue(self) -> Mapping[str, ToolSpec]: ...


class WireTask(BaseModel):
    # Lenient on purpose: servers without strict mode may drop null fields or send `args` as an
    # object; what matters is caught by the Plan model and validate_plan with a clear message.
    model_config = ConfigDict(extra="ignore")

    id: str
    kind: TaskKind
    title: str
    tool: str | None = None
    args_json: str | None = None
    args: dict[str, Any] | None = None
    prompt: str | None = None
    deps: list[str] = []


class WirePlan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str
    tasks: list[WireTask]


def plan_schema(tool_names: list[str]) -> dict[str, Any]:
    """The strict JSON schema of the wire format; `tool` is limited to the known tool names."""
    tool: dict[str, Any] = (
        {"type": ["string", "null"], "enum": [*sorted(tool_names), None]}
        if 0 < len(tool_names) <= MAX_ENUM_NAMES
        else {"type": ["string", "null"]}
        if tool_names
        else {"type": "null"}
    )
    nullable_string = {"type": ["string", "null"]}
    task = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "kind", "title", "tool", "args_json", "prompt", "deps"],
        "properties": {
            "id": {"type": "string", "description": 'Unique id such as "t1".'},
            "kind": {"type": "string", "enum": [kind.value for kind in TaskKind]},
            "title": {"type": "string", "description": "A few words for the user."},
            "tool": tool,
            "args_json": {
                **nullable_string,
                "description": "Tool tasks: the arguments as a JSON object in a string.",
            },
            "prompt": {**nullable_string, "description": "llm tasks: the instruction."},
            "deps": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["title", "tasks"],
        "properties": {
            "title": {"type": "string", "description": "The plan in a few words."},
            "tasks": {"type": "array", "items": task},
        },
    }


def to_wire(plan: Plan) -> dict[str, Any]:
    """A canonical plan in the wire format: what a model's answer for it looks like."""
    return {
        "title": plan.title,
        "tasks": [
            {
                "id": task.id,
                "kind": task.kind.value,
                "title": task.title,
                "tool": task.tool,
                "args_json": json.dumps(task.args) if task.kind is TaskKind.TOOL else None,
                "prompt": task.prompt,
                "deps": list(task.deps),
            }
            for task in plan.tasks
        ],
    }


def parse_answer(
    completion: Completion,
    *,
    catalogue: Mapping[str, ToolSpec],
    max_tasks: int = DEFAULT_MAX_TASKS,
    revision: Revision | None = None,
) -> Plan | list[str]:
    """A valid Plan from the model's answer, or every problem that stops it being one.

    For a revision, the answer is the part of the plan still to run; it is returned as given
    once the run's plan revised by it (scheduler.dag.revision) is valid.
    """
    if completion.refusal:
        return [
            f"The model declined to plan ({completion.refusal.strip()}). If the goal cannot be "
            "done with the available tools, a plan whose summary task explains what cannot be "
            "done and why is the right answer."
        ]
    content = (completion.content or "").strip()
    if completion.truncated:
        return [
            "The answer was cut off at the output length limit before the plan was complete; "
            "a smaller plan is needed (fewer tasks, shorter titles and prompts)."
        ]
    if not content and completion.tool_calls:
        return [
            f"The answer was a tool call ({', '.join(sorted(set(completion.tool_calls)))}) "
            "instead of the plan. Tools are not called while planning: put each call in a tool "
            "task of the plan, and return the plan as one JSON object."
        ]
    if not content:
        return ["The answer was empty; the plan must be returned as one JSON object."]
    try:
        raw = json.loads(content)
    except json.JSONDecodeError as error:
        return [
            f"The answer is not valid JSON ({error.msg} at line {error.lineno}, column "
            f"{error.colno}); only the plan, as one JSON object, is expected."
        ]
    try:
        wire = WirePlan.model_validate(raw)
    except ValidationError as error:
        return field_problems(error, raw)
    if revision is None:
        return plan_from_wire(wire, catalogue=catalogue, max_tasks=max_tasks)
    proposed = unchecked_plan(wire)
    if not isinstance(proposed, Plan):
        return proposed
    merged = merge_revision(
        revision.tasks,
        revision.plan,
        proposed,
        new_round=revision.text if revision.cause is RevisionCause.REPLAN else None,
    )
    if isinstance(merged, list):
        return merged
    return validate_plan(merged, catalogue=catalogue, max_tasks=max_tasks) or proposed


def plan_from_wire(
    wire: WirePlan,
    *,
    catalogue: Mapping[str, ToolSpec],
    max_tasks: int = DEFAULT_MAX_TASKS,
) -> Plan | list[str]:
    """The canonical Plan for a wire plan, validated against the catalogue, or its problems."""
    plan = unchecked_plan(wire)
    if not isinstance(plan, Plan):
        return plan
    return validate_plan(plan, catalogue=catalogue, max_tasks=max_tasks) or plan


def unchecked_plan(wire: WirePlan) -> Plan | list[str]:
    """The canonical Plan for a wire plan, with its fields checked but not yet as a plan."""
    problems: list[str] = []
    tasks: list[dict[str, Any]] = []
    for task in wire.tasks:
        args, problem = _arguments(task)
        if problem:
            problems.append(problem)
        tasks.append(
            {
                "id": task.id,
                "kind": task.kind,
                "title": task.title,
                "tool": task.tool or None,
                "args": args,
                "prompt": task.prompt,
                "deps": task.deps,
            }
        )
    if problems:
        return problems
    candidate = {"title": wire.title, "tasks": tasks}
    try:
        return Plan.model_validate(candidate)
    except ValidationError as error:
        return field_problems(error, candidate)


def _arguments(task: WireTask) -> tuple[dict[str, Any], str | None]:
    if task.args_json is None or not task.args_json.strip():
        return (task.args or {}), None
    try:
        args = json.loads(task.args_json)
    except json.JSONDecodeError as error:
        return {}, (
            f"Task {task.id!r}: args_json is not valid JSON ({error.msg}); it must be a JSON "
            'object encoded as a string, such as "{\\"city\\": \\"Tokyo\\"}".'
        )
    if not isinstance(args, dict):
        return {}, (
            f"Task {task.id!r}: args_json must encode a JSON object, not "
            f"{type(args).__name__ if args is not None else 'null'}."
        )
    return args, None


def field_problems(error: ValidationError, raw: Any) -> list[str]:
    """One sentence per schema error, naming the task by its id where the answer gives one."""
    problems = []
    for detail in error.errors():
        location = list(detail["loc"])
        where = "The plan"
        if len(location) >= 2 and location[0] == "tasks" and isinstance(location[1], int):
            task_id = _task_id_at(raw, location[1])
            where = f"Task {task_id!r}" if task_id else f"Task number {location[1] + 1}"
            location = location[2:]
        field = "/".join(str(part) for part in location)
        problems.append(f"{where}{f', field {field!r}' if field else ''}: {detail['msg']}.")
    return problems


def _task_id_at(raw: Any, index: int) -> str | None:
    tasks = raw.get("tasks") if isinstance(raw, dict) else None
    if isinstance(tasks, list) and 0 <= index < len(tasks) and isinstance(tasks[index], dict):
        task_id = tasks[index].get("id")
        return task_id if isinstance(task_id, str) and task_id else None
    return None


def named_tools(completion: Completion) -> set[str]:
    """The tool names an answer's tasks give, read as leniently as possible (for repairs)."""
    try:
        raw = json.loads(completion.content or "")
    except json.JSONDecodeError:
        return set()
    tasks = raw.get("tasks") if isinstance(raw, dict) else None
    if not isinstance(tasks, list):
        return set()
    return {
        task["tool"]
        for task in tasks
        if isinstance(task, dict) and isinstance(task.get("tool"), str)
    }


def failure_message(problems: list[str], attempts: int) -> str:
    """What the user reads when no valid plan came out."""
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        f"I could not make a valid plan for this goal ({attempts} attempts). "
        f"The last answer had these problems:\n{listed}"
    )


class LLMPlanner:
    """The engine's Planner: asks the model, validates, repairs up to MAX_REPAIRS times."""

    def __init__(
        self,
        llm: LLM,
        toolbox: ToolCatalogue,
        *,
        max_tasks: int = DEFAULT_MAX_TASKS,
        max_repairs: int = MAX_REPAIRS,
        budget: Budget | None = None,
    ) -> None:
        self._llm = llm
        self._toolbox = toolbox
        self._max_tasks = max_tasks
        self._max_repairs = max_repairs
        self._budget = budget or Budget()
        self._reported_schemas: set[str] = set()

    async def __call__(self, request: PlanRequest) -> Plan:
        """Return a valid plan for the request's goal, or raise PlanningFailed for the user.

        Above the catalogue budget the model is shown a shortlist of the tools most relevant to
        the goal and the thread's earlier goals, plus the other tools' names; plans are checked
        against the whole catalogue, and a repair shows in full any tool the answer named from
        outside the shortlist.
        """
        catalogue = dict(await self._toolbox.catalogue())
        self._report_broken_schemas(catalogue)
        offered = shortlist(
            catalogue,
            goal=request.goal,
            earlier_goals=[earlier.goal for earlier in request.history],
            budget=self._budget,
        )
        if not offered.complete:
            log.info(
                "planning run %s with a shortlist of %d of %d tools",
                request.run_id, len(offered.shown), len(catalogue),
            )  # fmt: skip
        schema = plan_schema(list(catalogue))
        revision = request.revision
        if revision is None:
            messages = planner_messages(
                goal=request.goal,
                history=request.history,
                catalogue=offered.shown,
                hidden=offered.hidden,
                max_tasks=self._max_tasks,
            )
        else:
            messages = revision_messages(
                goal=request.goal,
                catalogue=offered.shown,
                hidden=offered.hidden,
                max_tasks=self._max_tasks,
                revision=revision,
                next_id=next_task_id([task.id for task in revision.tasks]),
            )
        attempts = self._max_repairs + 1
        problems: list[str] = []
        for attempt in range(1, attempts + 1):
            try:
                completion = await self._llm.complete_structured(
                    messages, name=SCHEMA_NAME, schema=schema, usage=request.record_usage
                )
            except TaskError as error:
                if error.retryable:
                    raise  # the engine retries planning by its policy
                raise PlanningFailed(
                    f"I could not plan this goal because the language model call failed: {error}"
                ) from error
            outcome = parse_answer(
                completion, catalogue=catalogue, max_tasks=self._max_tasks, revision=revision
            )
            if isinstance(outcome, Plan):
                return outcome
            problems = outcome
            log.info(
                "plan for run %s rejected (attempt %d of %d): %s",
                request.run_id, attempt, attempts, "; ".join(problems),
            )  # fmt: skip
            echo = completion.content or completion.refusal or ""
            if echo:
                messages.append(Message(role="assistant", content=truncate(echo, _ECHO_BUDGET)))
            added = sorted(named_tools(completion) & set(offered.hidden))
            offered = with_tools(offered, catalogue, added)
            messages.append(repair_message(problems, {name: catalogue[name] for name in added}))
        raise PlanningFailed(failure_message(problems, attempts))

    def _report_broken_schemas(self, catalogue: Mapping[str, ToolSpec]) -> None:
        """Log, once per tool, an input schema that cannot check arguments (planning goes on)."""
        for name, spec in catalogue.items():
            if name in self._reported_schemas:
                continue
            problem = schema_problem(spec.input_schema)
            if problem is not None:
                self._reported_schemas.add(name)
                log.warning(
                    "The input schema of tool %s is not a valid JSON Schema (%s); its arguments "
                    "are not checked before it is called.",
                    name,
                    problem,
                )

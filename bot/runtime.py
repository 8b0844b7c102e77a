"""Builds the parts of dagbot from settings: store, MCP toolbox, LLM, planner, engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.settings import Settings
from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.plan import TaskKind
from scheduler.planning.llm import LLM
from scheduler.planning.llm_steps import LlmExecutor, SummaryExecutor
from scheduler.planning.planner import LLMPlanner
from scheduler.planning.shortlist import Budget
from scheduler.tools.tool_step import ToolExecutor
from scheduler.tools.toolbox import Toolbox, load_mcp_config
from storage.connect import open_store
from storage.leases import Owner, OwnerKind
from storage.store import Store


@dataclass(frozen=True, kw_only=True)
class Runtime:
    settings: Settings
    store: Store
    toolbox: Toolbox
    llm: LLM
    engine: Engine


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, kind: OwnerKind = OwnerKind.BOT
) -> AsyncIterator[Runtime]:
    """Open everything a run needs; on exit, stop the engine (runs resume next time) and close.

    `kind`: a bot shares work with other bots and takes over the runs of one that died; a
    terminal works only on its own runs.
    """
    store = await open_store(
        settings.database_url, owner=Owner(kind=kind, lease_seconds=settings.lease_seconds)
    )
    try:
        mcp = load_mcp_config(settings.mcp_config_path())
        toolbox = await Toolbox.start(
            mcp,
            startup_wait=settings.mcp_startup_wait,
            ping_interval=settings.mcp_ping_interval,
        )
        try:
            llm = LLM.from_settings(settings)
            engine = Engine(
                store,
                {
                    TaskKind.TOOL: ToolExecutor(toolbox),
                    TaskKind.LLM: LlmExecutor(llm),
                    TaskKind.SUMMARY: SummaryExecutor(llm),
                },
                planner=LLMPlanner(
                    llm,
                    toolbox,
                    max_tasks=settings.max_tasks,
                    budget=Budget(
                        max_tools=settings.planner_max_tools,
                        max_tokens=settings.planner_max_tool_tokens,
                    ),
                ),
                config=EngineConfig(
                    max_concurrency=settings.max_concurrency,
                    max_total_concurrency=settings.max_total_concurrency,
                    task_timeout=settings.task_timeout,
                    retry=settings.retry_policies(),
                    max_tasks=settings.max_tasks,
                    max_replans=settings.max_replans,
                    take_over=kind is OwnerKind.BOT,
                    approval_timeout=settings.approval_timeout,
                ),
                needs_approval=lambda task: bool(task.tool) and mcp.needs_approval(task.tool or ""),
            )
            try:
                yield Runtime(
                    settings=settings, store=store, toolbox=toolbox, llm=llm, engine=engine
                )
            finally:
                await engine.close()
                await llm.aclose()
        finally:
            await toolbox.aclose()
    finally:
        await store.close()

"""What a sick MCP server costs: start-up and planning with and without a hanging server.

Two toolboxes in one run: `time` (mcp-server-time) and `test` (our test server), then the same
two plus `hang`, a server that never answers the handshake (its attempt lasts the 30 s connect
timeout). For each:

- the first plan right after start, as a goal sent at once after a deploy would be planned (a
  fresh toolbox each time, dagbot's start-up wait): how long it takes and which servers it saw;
- how long `Toolbox.start` takes, and the median time of a plan made with the real planner
  against a local fake OpenAI server once the healthy servers are up. The figure that matters is
  the ratio of the medians (1.0 = the hanging server costs nothing).

    python -m benchmarks.mcp_startup [--plans 20] [--starts 3] [--startup-wait 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from scheduler.dag.executors import PlanRequest
from scheduler.planning.llm import LLM
from scheduler.planning.planner import LLMPlanner
from scheduler.tools.mcp_config import McpConfig
from scheduler.tools.reconnect import STARTUP_WAIT
from scheduler.tools.toolbox import Toolbox
from tests.e2e.slack_harness import WEATHER_PLAN
from tests.fakes.mcp_test_server import stdio_entry, time_server_entry
from tests.fakes.openai_server import Reply, fake_openai_server


async def _no_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    return None


def _request(run_id: str) -> PlanRequest:
    return PlanRequest(run_id=run_id, goal="weather", history=(), record_usage=_no_usage)


async def first_plans(
    llm: LLM, configurations: dict[str, dict[str, Any]], starts: int, startup_wait: float
) -> None:
    """Start a fresh toolbox and plan at once, `starts` times per configuration (alternated)."""
    durations: dict[str, list[float]] = {name: [] for name in configurations}
    seen: dict[str, set[str]] = {name: set() for name in configurations}
    for n in range(starts):
        for name, servers in configurations.items():
            began = time.perf_counter()
            box = await Toolbox.start(
                McpConfig.model_validate({"mcpServers": servers}), startup_wait=startup_wait
            )
            try:
                await LLMPlanner(llm, box)(_request(f"first{n}"))
                durations[name].append(time.perf_counter() - began)
                seen[name] |= {tool.partition(".")[0] for tool in await box.catalogue()}
            finally:
                await box.aclose()
    print(f"first plan right after start (start-up wait {startup_wait:g} s, {starts} starts each)")
    print(f"{'configuration':<24} {'median':>8} {'max':>8}  servers the plans saw")
    for name, times in durations.items():
        print(
            f"{name:<24} {statistics.median(times):>6.2f} s {max(times):>6.2f} s  "
            f"{', '.join(sorted(seen[name]))}"
        )
    print()


async def main(plans: int, starts: int, startup_wait: float) -> None:
    healthy = {"test": stdio_entry(), "time": time_server_entry()}
    hanging = {**healthy, "hang": stdio_entry(MCP_TEST_SERVER_HANG_AT_START="1")}
    configurations = {"2 healthy servers": healthy, "2 healthy + 1 hanging": hanging}
    boxes: dict[str, Toolbox] = {}
    start_ms: dict[str, float] = {}
    durations: dict[str, list[float]] = {name: [] for name in configurations}
    async with fake_openai_server() as openai:
        openai.respond_with(lambda request: Reply.json(WEATHER_PLAN))
        llm = LLM(model="fake-model", api_key=openai.api_key, base_url=openai.base_url)
        try:
            if starts:
                await first_plans(llm, configurations, starts, startup_wait)
            for name, servers in configurations.items():
                began = time.perf_counter()
                boxes[name] = await Toolbox.start(
                    McpConfig.model_validate({"mcpServers": servers}), startup_wait=0
                )
                start_ms[name] = (time.perf_counter() - began) * 1000
            for box in boxes.values():
                await box.wait_up("test", "time")
            planners = {name: LLMPlanner(llm, box) for name, box in boxes.items()}
            # Alternate the two, so that load on the machine falls on both alike.
            for n in range(plans):
                for name, planner in planners.items():
                    began = time.perf_counter()
                    await planner(_request(f"r{n}"))
                    durations[name].append((time.perf_counter() - began) * 1000)
            still = boxes["2 healthy + 1 hanging"].servers["hang"]
        finally:
            await llm.aclose()
            for box in boxes.values():
                await box.aclose()
    print(f"{'configuration':<24} {'Toolbox.start':>14} {'plan median':>12} {'plan p90':>10}")
    for name in configurations:
        times = sorted(durations[name])
        print(
            f"{name:<24} {start_ms[name]:>11.1f} ms {statistics.median(times):>9.1f} ms"
            f" {times[int(len(times) * 0.9)]:>7.1f} ms"
        )
    base, sick = (statistics.median(durations[name]) for name in configurations)
    print(f"plan median ratio, hanging / healthy: {sick / base:.3f} ({plans} plans each)")
    print(f"the hanging server after all the plans: {still}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--starts", type=int, default=3, help="fresh starts for the first plan")
    parser.add_argument("--startup-wait", type=float, default=STARTUP_WAIT)
    options = parser.parse_args()
    asyncio.run(main(options.plans, options.starts, options.startup_wait))

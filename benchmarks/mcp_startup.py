"""What a sick MCP server costs: start-up and planning with and without a hanging server.

Two toolboxes in one run: `time` (mcp-server-time) and `test` (our test server), then the same
two plus `hang`, a server that never answers the handshake (its attempt lasts the 30 s connect
timeout). For each: how long `Toolbox.start` takes, and the median time of a plan made with the
real planner against a local fake OpenAI server once the healthy servers are up. The figure that
matters is the ratio of the medians (1.0 = the hanging server costs nothing).

    python -m benchmarks.mcp_startup [--plans 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from scheduler.dag.executors import PlanRequest
from scheduler.planning.llm import LLM
from scheduler.planning.planner import LLMPlanner
from scheduler.tools.mcp_config import McpConfig
from scheduler.tools.toolbox import Toolbox
from tests.e2e.slack_harness import WEATHER_PLAN
from tests.fakes.mcp_test_server import stdio_entry, time_server_entry
from tests.fakes.openai_server import Reply, fake_openai_server


async def _no_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    return None


async def main(plans: int) -> None:
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
            for name, servers in configurations.items():
                began = time.perf_counter()
                boxes[name] = await Toolbox.start(
                    McpConfig.model_validate({"mcpServers": servers}), startup_grace=0
                )
                start_ms[name] = (time.perf_counter() - began) * 1000
            for box in boxes.values():
                await box.wait_up("test", "time")
            planners = {name: LLMPlanner(llm, box) for name, box in boxes.items()}
            # Alternate the two, so that load on the machine falls on both alike.
            for n in range(plans):
                for name, planner in planners.items():
                    request = PlanRequest(
                        run_id=f"r{n}", goal="weather", history=(), record_usage=_no_usage
                    )
                    began = time.perf_counter()
                    await planner(request)
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
    asyncio.run(main(parser.parse_args().plans))

"""Tool selection for big catalogues: how often the shortlist holds the tools a goal needs.

    python -m benchmarks.tool_selection

Over the real catalogues of six MCP reference servers (captured once into
benchmarks/fixtures/reference_catalogues.json by benchmarks/capture_catalogues.py) and the goals
of benchmarks/fixtures/tool_selection_goals.json, each labelled with the tools it needs (some are
follow-ups, with the thread's earlier goals), it ranks the catalogue for every goal exactly as the
planner does and prints:

- recall@k: the share of needed tools found among the k best-ranked tools, averaged over goals,
  and the share of goals whose needed tools are all there;
- catalogue tokens: what the planner is sent (shortlisted tools in full plus the others' names)
  against sending every tool in full, estimated as characters / 4.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from scheduler.dag.catalogue import ToolSpec
from scheduler.planning.prompts import render_catalogue, render_hidden
from scheduler.planning.shortlist import (
    DEFAULT_MAX_TOOL_TOKENS,
    DEFAULT_MAX_TOOLS,
    Budget,
    estimate_tokens,
    rank,
    shortlist,
)

FIXTURES = Path(__file__).with_name("fixtures")
KS = (5, 10, 15)
GOAL_SETS = (
    (
        "development set (the synonym table was written after seeing its misses)",
        FIXTURES / "tool_selection_goals.json",
    ),
    (
        "held-out set (written after the ranking was frozen, never tuned on)",
        FIXTURES / "tool_selection_heldout.json",
    ),
    (
        "fresh held-out set (39 goals committed before the ranking was changed, never tuned on)",
        FIXTURES / "tool_selection_fresh.json",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Goal:
    goal: str
    needs: frozenset[str]
    history: tuple[str, ...] = ()


def load_catalogue(path: Path = FIXTURES / "reference_catalogues.json") -> dict[str, ToolSpec]:
    """The captured tools as the toolbox would name them (`<server>.<tool>`)."""
    servers: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    catalogue: dict[str, ToolSpec] = {}
    for server, captured in servers.items():
        for tool in captured["tools"]:
            name = f"{server}.{tool['name']}"
            catalogue[name] = ToolSpec(
                name=name,
                description=tool.get("description") or tool.get("title") or "",
                input_schema=tool.get("inputSchema") or {"type": "object"},
                output_schema=tool.get("outputSchema"),
            )
    return catalogue


def load_goals(path: Path = FIXTURES / "tool_selection_goals.json") -> list[Goal]:
    return [
        Goal(
            goal=item["goal"],
            needs=frozenset(item["needs"]),
            history=tuple(item.get("history", ())),
        )
        for item in json.loads(path.read_text(encoding="utf-8"))
    ]


def prompt_tokens(catalogue: dict[str, ToolSpec], shown: list[str]) -> int:
    """Tokens of the catalogue part of the planner's prompt when `shown` are the shortlist."""
    hidden = sorted(set(catalogue) - set(shown))
    text = render_catalogue({name: catalogue[name] for name in shown})
    if hidden:
        text += "\n" + render_hidden(hidden)
    return estimate_tokens(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-tools", type=int, default=None, help="the budget's tool count (default: dagbot's)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="the budget's tokens (default: dagbot's)"
    )
    options = parser.parse_args()

    catalogue = load_catalogue()
    full = estimate_tokens(render_catalogue(catalogue))
    print(
        f"{len(catalogue)} tools from {len({n.split('.')[0] for n in catalogue})} servers; "
        f"whole catalogue: {full:,} tokens (estimated as characters / 4)"
    )
    budget = Budget(
        max_tools=options.max_tools or DEFAULT_MAX_TOOLS,
        max_tokens=options.max_tokens or DEFAULT_MAX_TOOL_TOKENS,
    )
    for title, path in GOAL_SETS:
        report(title, catalogue, load_goals(path), full, budget)


def report(
    title: str, catalogue: dict[str, ToolSpec], goals: list[Goal], full: int, budget: Budget
) -> None:
    """Print recall@k and tokens for one goal set."""
    for goal in goals:
        unknown = goal.needs - set(catalogue)
        if unknown:
            raise SystemExit(f"goal {goal.goal!r} needs unknown tools: {sorted(unknown)}")
    rankings = [[name for name, _ in rank(catalogue, g.goal, g.history)] for g in goals]
    print(
        f"\n{title}: {len(goals)} goals ({sum(1 for g in goals if g.history)} follow-ups), "
        f"{sum(len(g.needs) for g in goals)} needed tools in all\n"
    )
    print("| k | recall@k | goals with every needed tool | catalogue tokens (mean) | saved |")
    print("| --- | --- | --- | --- | --- |")
    for k in KS:
        recalls = [
            len(g.needs & set(r[:k])) / len(g.needs) for g, r in zip(goals, rankings, strict=True)
        ]
        complete = sum(1 for g, r in zip(goals, rankings, strict=True) if g.needs <= set(r[:k]))
        tokens = mean(prompt_tokens(catalogue, r[:k]) for r in rankings)
        print(
            f"| {k} | {mean(recalls):.3f} | {complete}/{len(goals)} | {tokens:,.0f} | "
            f"{1 - tokens / full:.0%} |"
        )

    picks = [
        list(shortlist(catalogue, goal=g.goal, earlier_goals=g.history, budget=budget).shown)
        for g in goals
    ]
    recalls = [len(g.needs & set(p)) / len(g.needs) for g, p in zip(goals, picks, strict=True)]
    tokens = mean(prompt_tokens(catalogue, p) for p in picks)
    print(
        f"\ndagbot's budget ({budget.max_tools} tools / {budget.max_tokens:,} tokens): recall "
        f"{mean(recalls):.3f}, {mean(len(p) for p in picks):.1f} tools shown, "
        f"{tokens:,.0f} tokens ({1 - tokens / full:.0%} saved)"
    )

    misses = [
        (
            g.goal,
            sorted(g.needs - set(r[:15])),
            [r.index(n) + 1 for n in sorted(g.needs - set(r[:15]))],
        )
        for g, r in zip(goals, rankings, strict=True)
        if not g.needs <= set(r[:15])
    ]
    if misses:
        print("\nmissed at k=15 (goal, tools, their ranks):")
        for text, tools, ranks in misses:
            found = ", ".join(f"{t} (#{n})" for t, n in zip(tools, ranks, strict=True))
            print(f"- {text!r}: {found}")


if __name__ == "__main__":
    main()

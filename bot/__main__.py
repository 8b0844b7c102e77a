"""dagbot: a Slack bot that plans a goal as a graph of tasks and runs it; also a terminal tool.

`dagbot` (or `python -m bot`) with no command serves Slack; `run "<goal>"` plans and runs a goal
in this terminal; `runs` lists what ran. Each command imports only what it needs, so `runs`,
which only reads the database, answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EPILOG = """\
exit status: 0 done, 1 the run failed or was cancelled, 2 a setting or the input is wrong,
130 Ctrl-C, 141 the output was closed (| head), 143 SIGTERM.
Settings are environment variables (or a .env file): see the README's configuration table.
"""


def dagbot_version() -> str:
    # Imported here: reading package metadata costs more than the rest of `runs`.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dagbot")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class _Version(argparse.Action):
    """`--version`: prints `<prog> <version>`, reading the version only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        print(f"{parser.prog} {dagbot_version()}")  # on stdout, as argparse's own does
        parser.exit()


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The command line: `serve` (the default), `run <goal>`, `runs [id]`, each option with help."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(__doc__ or "").split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show dagbot's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the Slack bot (the default): Socket Mode when SLACK_APP_TOKEN is set, else HTTP",
        description="Run the Slack bot until SIGTERM or Ctrl-C.",
    )
    run = commands.add_parser(
        "run",
        help="plan and run a goal in this terminal",
        description="Plan a goal, run it here showing each task's status, print the summary.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("goal", help="what you want done, in quotes")
    runs = commands.add_parser(
        "runs",
        help="list recent runs, or show one: tasks, start times, arguments, attempts, tokens",
        description="List recent runs, newest first, or show one run task by task.",
    )
    runs.add_argument("run_id", nargs="?", help="a run id (or a unique prefix of one)")
    runs.add_argument(
        "--limit", type=int, default=20, help="how many recent runs to list (default: 20)"
    )
    orphan = runs.add_mutually_exclusive_group()
    orphan.add_argument(
        "--resume", action="store_true", help="carry on a terminal run whose process stopped"
    )
    orphan.add_argument(
        "--cancel", action="store_true", help="cancel a terminal run whose process stopped"
    )
    return parser


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    name = prog or ("dagbot" if os.path.basename(sys.argv[0]) == "dagbot" else "python -m bot")
    args = build_parser(name).parse_args(argv)
    if args.command == "run":
        from bot.cli import run_goal

        return run_goal(args.goal)
    if args.command == "runs" and (args.resume or args.cancel):
        from bot.cli import take_back_run

        if args.run_id is None:
            return take_back_run("", cancel=args.cancel)
        return take_back_run(args.run_id, cancel=args.cancel)
    if args.command == "runs":
        from bot.runs_command import show_runs

        return show_runs(args.run_id, limit=args.limit)
    from bot.server import serve

    return serve()


def console() -> int:
    """The `dagbot` console script."""
    return main(prog="dagbot")


if __name__ == "__main__":
    sys.exit(main())

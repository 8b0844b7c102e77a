"""`python -m bot` serves Slack; `run "<goal>"` and `runs` work from a terminal."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the Slack bot (the default)")
    run = commands.add_parser("run", help="plan and run a goal in this terminal")
    run.add_argument("goal", help="what you want done, in quotes")
    runs = commands.add_parser("runs", help="list recent runs, or show one")
    runs.add_argument("run_id", nargs="?", help="a run id (or a unique prefix of one)")
    runs.add_argument("--limit", type=int, default=20)
    orphan = runs.add_mutually_exclusive_group()
    orphan.add_argument(
        "--resume", action="store_true", help="carry on a terminal run whose process stopped"
    )
    orphan.add_argument(
        "--cancel", action="store_true", help="cancel a terminal run whose process stopped"
    )
    args = parser.parse_args(argv)

    if args.command == "run":
        from bot.cli import run_goal

        return run_goal(args.goal)
    if args.command == "runs" and (args.resume or args.cancel):
        from bot.cli import take_back_run

        if args.run_id is None:
            parser.error("--resume and --cancel need a run id")
        return take_back_run(args.run_id, cancel=args.cancel)
    if args.command == "runs":
        from bot.cli import show_runs

        return show_runs(args.run_id, limit=args.limit)
    from bot.server import serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())

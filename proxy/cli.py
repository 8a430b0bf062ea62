"""The command line: `mixpanel-proxy serve|check|snippet`. Only here is a ConfigError an exit."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import __version__
from .assets.snippet import add_snippet_command, run_snippet
from .config import CONFIG_ENV, Config, ConfigError, config_path_from_env, load_config
from .config.crosscheck import deployment_problems
from .ops import online
from .ops.logs import setup_logging
from .server import supervisor
from .spool import admin as spool_admin

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 1
EXIT_SPOOL = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixpanel-proxy", description="A self-hosted relay for Mixpanel SDK traffic.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = f"TOML config file (default: ${CONFIG_ENV}, else the embedded default)"
    serve = commands.add_parser("serve", help="run the relay")
    serve.add_argument("--config", help=config_help)
    serve.add_argument("--pid-file", help="write the supervisor's pid here while it runs")
    check = commands.add_parser("check", help="validate a config file; exit 2 on problems")
    check.add_argument("--config", help=config_help)
    check.add_argument("--online", action="store_true",
                       help="also probe each region and the CDN; exit 1 if one is unreachable")
    add_snippet_command(commands, config_help)
    spool_admin.add_parser(commands, config_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = config_path_from_env(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        problems = deployment_problems(config)
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            return EXIT_CONFIG
        print(f"{config.source}: ok")
        return check_online(config) if args.online else 0
    if args.command == "snippet":
        return run_snippet(config, args)
    if args.command == "spool":
        return spool_admin.run(args.action, config, args.all)
    return serve(config, path, args.pid_file)


def check_online(config: Config) -> int:
    reports = asyncio.run(online.check_online(config))
    width = max(len(report.target.name) for report in reports)
    for report in reports:
        print(report.line(width), flush=True)
    return 0 if all(report.ok for report in reports) else EXIT_UNREACHABLE


def serve(config: Config, path: str | None = None, pid_file: str | None = None) -> int:
    """Bind, fork `[server] workers` processes, supervise them (SIGHUP reloads `path`)."""
    setup_logging(config.log)
    spool_problem = spool_admin.preflight(config)
    if spool_problem is not None:   # never serve without the spool the config asks for
        print(spool_problem, file=sys.stderr)
        return EXIT_SPOOL
    return supervisor.serve(config, path, pid_file)

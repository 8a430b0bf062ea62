"""The command line: `mixpanel-proxy serve|check`. Only here does a ConfigError become an exit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from . import __version__
from .app import create_app
from .config import CONFIG_ENV, Config, ConfigError, config_path_from_env, load_config

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixpanel-proxy", description="A self-hosted relay for Mixpanel SDK traffic.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = f"TOML config file (default: ${CONFIG_ENV}, else the embedded default)"
    serve = commands.add_parser("serve", help="run the relay")
    serve.add_argument("--config", help=config_help)
    check = commands.add_parser("check", help="validate a config file; exit 2 on problems")
    check.add_argument("--config", help=config_help)
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
        print(f"{config.source}: ok")
        return 0
    return serve(config, path)


def serve(config: Config, path: str | None = None) -> int:
    """Bind, fork `[server] workers` processes, supervise them (SIGHUP reloads `path`)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return supervisor.serve(config, path)

"""The `autotinybert` command: one sub-command (or group) per module in this package.

Every module here that defines ``register(subparsers)`` is picked up; `register` adds its sub-command(s) and
sets ``func`` to a function taking the parsed arguments. ``ORDER`` (an int, default 100) sorts them in
``--help``. Modules import torch and friends inside those functions, so ``autotinybert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import UserError



def command_modules() -> list:
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
    modules = [m for m in modules if hasattr(m, "register")]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="autotinybert",
        description="Find and build the best small BERT for a latency budget (AutoTinyBERT).",
    )
    parser.add_argument("--version", action="version", version=f"autotinybert {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (UserError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)

"""The ``sharedstate`` command line: ``demo``, ``race`` and ``lint``.

Each subcommand lives in its own module under :mod:`sharedstate.tools` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. The modules are imported lazily, when their command
runs, so a missing optional dependency of one tool (the demo needs gunicorn) breaks only that
command. Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

# command -> (module, one-line help). The module is imported only when its command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "sharedstate.tools.demo",
        "run the classic global-counter app under a multi-process server, unsafe and safe, side by side",
    ),
    "race": (
        "sharedstate.tools.race",
        "fire N concurrent HTTP requests at an endpoint; report duplicates, gaps and latency",
    ),
    "lint": (
        "sharedstate.tools.lint",
        "find module-level mutable state that request handlers mutate",
    ),
}


def _load(module: str) -> ModuleType:
    return importlib.import_module(module)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the parser; only the subcommand named in ``argv`` imports its module (for its options)."""
    from sharedstate import __version__

    parser = argparse.ArgumentParser(
        prog="sharedstate",
        description="Tools that show whether a web app's shared state is correct under concurrency.",
    )
    parser.add_argument("--version", action="version", version=f"sharedstate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            # Import failures surface in main() with a one-line message, not here.
            cmd.set_defaults(_module=module)
            tool = _load(module)
            tool.add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 findings/failed check, 2 usage error)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(args_list)
    except ImportError as exc:
        print(f"sharedstate: {exc}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    tool = _load(args._module)
    try:
        return int(tool.run(args))
    except KeyboardInterrupt:
        print("sharedstate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sharedstate lint . | head`: the reader left, which is not an error
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

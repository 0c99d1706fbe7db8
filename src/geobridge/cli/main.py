"""Entry point of the ``geobridge`` command.

Each sub-command is a module in this package with two functions:

* ``add_parser(subparsers)`` registers its ``argparse`` parser;
* ``run(args) -> int`` does the work and returns the exit code.

Modules are imported only to build the parser; heavy libraries are imported inside ``run``.
Every option is checked by ``parse`` before any work starts: its argparse ``type=`` (``cli/args.py``) and, for
``--out``, the one output rule (``args.check_output``, with the command's ``out_kind`` default).
Errors that users can cause (bad options, paths, data, config values) are raised as ``GeoBridgeError`` (or
argparse's usage error) and printed as one clear line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from geobridge.cli.args import check_outputs
from geobridge.errors import GeoBridgeError

COMMAND_MODULES: tuple[str, ...] = (
    "geobridge.cli.synth",
    "geobridge.cli.data",
    "geobridge.cli.train",
    "geobridge.cli.eval",
    "geobridge.cli.demo",
    "geobridge.cli.index",
    "geobridge.cli.embed",
    "geobridge.cli.locate",
    "geobridge.cli.serve",
    "geobridge.cli.export",
    "geobridge.cli.renorm",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geobridge", description="Cross-view geo-localisation with semantic anchors.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The checked options of one command line; a bad one exits with code 2 and one ``error:`` line naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_outputs(args)
    except GeoBridgeError as exc:
        print(f"geobridge {args.command}: error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exc:  # a refused option (code 2), or --help / --version (code 0)
        return exc.code if isinstance(exc.code, int) else 2 if exc.code else 0
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GeoBridgeError as exc:
        print(f"geobridge {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a multi-line message from a library is joined with ' | ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines) if lines else type(exc).__name__


def _version() -> str:
    from geobridge.version import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""mtls-harness: end-to-end mTLS tests for App Gateway → API Management → AKS ingress → pod chains.

Every user mistake (bad option, missing file, wrong password) ends in one ``error: …`` line and exit code 2; a
check that found problems exits 1; success exits 0. No traceback reaches the user for a HarnessError.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness import __version__
from harness.cli import certs, chain, explain, images, migrate, rotate, run, selftest, up
from harness.errors import HarnessError, UsageError

__all__ = ["build_parser", "entry", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2 (argparse's own code for it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtls-harness", description=__doc__.splitlines()[0] if __doc__ else None,
                     epilog="docs: README.md and docs/ in the repository; every command has --help")
    parser.add_argument("--version", action="version", version=f"mtls-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    for command in (up, run, explain, migrate, rotate, certs, images, chain, selftest):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"mtls-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"mtls-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The console script and ``python -m harness``: ``main()``, with a Ctrl-C that lands after a command has
    already cleaned up (a signal held during cleanup is re-raised late) still ending in exit code 130."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    # Under `python -m`, CPython ends the process by SIGINT (exit -2, whatever code we pass) if a KeyboardInterrupt
    # ever escaped a nested exec() of source text, even one we caught: a Ctrl-C landing while a lazy import builds
    # a dataclass or namedtuple does that. Each exec() of source text clears that record first (run_eval_code_obj
    # in Python/pythonrun.c, 3.8-3.13), so the code we chose is the code the caller sees.
    exec("pass")  # noqa: S102 - a constant, see above
    sys.exit(code)

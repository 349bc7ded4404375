"""The `baseline-operator` command line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from baseline_operator import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baseline-operator",
        description="Keeps every selected namespace at its SecurityBaseline: network policies, metadata-API "
        "block, LimitRange, ResourceQuota, least-privilege RBAC and Pod Security labels.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    sys.exit(0)

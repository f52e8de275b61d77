"""``mtls-harness images``: build the container images from the binaries installed here (air-gapped, CI).

    mtls-harness images build [--only envoy|nginx|pod ...] [--json]

Progress goes to stderr (a build takes a while: the Envoy binary alone is ~110 MB); the summary — tag, size, build
time per image — to stdout, as a table or one JSON document. Exit codes: 0 built, 1 a build failed, 2 no Docker engine
or a missing binary (one ``error:`` line saying what to install or start).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.cli.options import print_help_for_no_action
from harness.images.build import BuiltImage, build_images
from harness.images.resolve import ROLES, ImageRole

__all__ = ["cmd_build", "register"]


def register(subparsers: Any) -> None:
    """Add ``images build`` to the main CLI's subparsers."""
    images = subparsers.add_parser("images", help="build the containers/kind targets' images from local binaries",
                                   description="Build the images the containers and kind targets run, FROM scratch "
                                               "out of the Envoy, nginx and Python installed here (no registry "
                                               "needed).")
    sub = images.add_subparsers(dest="images_command", metavar="ACTION", parser_class=type(images))
    images.set_defaults(func=lambda _args: print_help_for_no_action(images))
    build = sub.add_parser("build", help="build mtls-harness/{envoy,nginx,pod}:<version>-local",
                           description="Build mtls-harness/envoy, mtls-harness/nginx and mtls-harness/pod images "
                                       "tagged <component version>-local, each smoke-tested once after the build.")
    build.add_argument("--only", action="append", choices=ROLES, metavar="ROLE",
                       help=f"build only this image (repeatable; one of {', '.join(ROLES)}; default: all)")
    build.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    build.set_defaults(func=cmd_build)



def _table(built: list[BuiltImage]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mtls-harness images")
    for col in ("image", "size", "build", "smoke test"):
        table.add_column(col)
    for b in built:
        table.add_row(b.tag, f"{b.size_bytes / 1e6:.1f} MB", f"{b.build_seconds:.1f} s", b.smoke_output)
    Console().print(table)


def cmd_build(args: argparse.Namespace) -> int:
    roles: list[ImageRole] = list(args.only) if args.only else list(ROLES)
    built = build_images(roles)
    if args.json:
        print(json.dumps({"images": [b.as_dict() for b in built]}))
    else:
        _table(built)
    return 0

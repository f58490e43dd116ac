"""The `ddm-jax` console script. Each sub-command lives in `ddm_jax/commands/<name>.py` and
exposes `add_parser(subparsers)`, which registers its parser with `set_defaults(run=...)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from ddm_jax.errors import DDMError

COMMANDS = ("convert", "decompose", "example")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddm-jax", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ddm_jax.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except DDMError as err:
        print(f"ddm-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddm-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

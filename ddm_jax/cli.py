"""The `ddm-jax` console script. Each sub-command lives in `ddm_jax/commands/<name>.py` and
exposes `add_parser(subparsers)`, which registers its parser with `set_defaults(run=...)`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from ddm_jax.errors import DDMError
from ddm_jax.runtime import disable_cpu_concurrent_scheduler

COMMANDS = ("convert", "decompose", "calibrate", "merge", "export", "example", "prepare", "train", "evaluate",
            "plot", "report", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddm-jax", description="The Deep Decomposition Model in JAX: split galaxy spectra into their "
                                    "star-forming and AGN parts.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ddm_jax.commands.{name}").add_parser(subparsers)
    return parser


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so a second run does not recompile.

    DDM_JAX_COMPILATION_CACHE names the folder (default ~/.cache/ddm-jax/jax); 'off' disables it.
    """
    setting = os.environ.get("DDM_JAX_COMPILATION_CACHE", str(Path.home() / ".cache" / "ddm-jax" / "jax"))
    if setting.lower() == "off":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", setting)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv: list[str] | None = None) -> int:
    disable_cpu_concurrent_scheduler()  # before any JAX work: prepare's batched fits need it (ddm_jax.runtime)
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
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

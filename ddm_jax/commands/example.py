"""`ddm-jax example`: the whole pipeline on bundled data, with nothing downloaded.

Converts the committed tiny Keras-written weight files (random weights!) into a checkpoint and
decomposes the bundled example spectra. It shows the tool working end to end; it is not a
real decomposition.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("example", help="convert bundled weights and decompose bundled spectra",
                                   description=__doc__)
    parser.add_argument("-o", "--output", default="example_output", help="output folder (default: example_output)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.evaluation.demo import RANDOM_WEIGHTS_NOTICE, run_example

    print(RANDOM_WEIGHTS_NOTICE)
    print(run_example(args.output))
    return 0

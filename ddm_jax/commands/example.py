"""`ddm-jax example`: the whole pipeline on bundled data, with nothing downloaded.

Converts the committed tiny Keras-written weight files (random weights!) into a checkpoint and
decomposes the bundled example spectra. It shows the tool working end to end; it is not a
real decomposition.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

RANDOM_WEIGHTS_NOTICE = (
    "NOTE: these weights are RANDOM (a tiny test network written by Keras, bundled with ddm-jax).\n"
    "The numbers below show the pipeline working end to end; they are NOT a real decomposition.\n"
    "For science, download the released weights (see weights/README.md) and run `ddm-jax convert`.")


def _data(name: str) -> Path:
    return Path(str(resources.files("ddm_jax") / "data" / name))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("example", help="convert bundled weights and decompose bundled spectra",
                                   description=__doc__)
    parser.add_argument("-o", "--output", default="example_output", help="output folder (default: example_output)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.bpt import CLASS_NAMES
    from ddm_jax.commands.convert import convert_to_checkpoint
    from ddm_jax.inference import Decomposer
    from ddm_jax.io import save_npz_atomic

    out = Path(args.output)
    checkpoint = out / "checkpoint"
    print(RANDOM_WEIGHTS_NOTICE)
    convert_to_checkpoint([_data("tiny_ddm_keras.hdf5"), _data("tiny_regressor_keras.hdf5")], checkpoint,
                          overwrite=True)
    print(f"converted the bundled Keras files -> {checkpoint}")
    with np.load(_data("example_spectra.npz"), allow_pickle=False) as examples:
        flux, mass, labels = examples["flux"], examples["mass"], examples["label"]
    decomposer = Decomposer.from_checkpoint(checkpoint)
    result = decomposer(flux, mass)
    output = save_npz_atomic(out / "decomposition.npz", {"wavelength": decomposer.wavelength, **result})
    print(f"\n{'spectrum':28s} {'p_sf':>7s} {'p_agn':>7s} {'SF frac':>7s}  BPT class (composite / SF part / AGN part)")
    for i, label in enumerate(labels):
        classes = " / ".join(CLASS_NAMES[int(c)] for c in result["bpt_class"][i])
        print(f"{str(label):28s} {result['p_sf'][i]:7.3f} {result['p_agn'][i]:7.3f} "
              f"{result['sf_fraction'][i]:7.3f}  {classes}")
    print(f"\nwrote {output} (keys: {', '.join(['wavelength', *result])})")
    return 0

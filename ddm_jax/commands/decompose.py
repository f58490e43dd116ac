"""`ddm-jax decompose`: SF/AGN decomposition of a batch of spectra into one .npz file."""

from __future__ import annotations

from pathlib import Path

from ddm_jax.bpt import SCHEMES
from ddm_jax.checkpoint import DEFAULT_CHECKPOINT
from ddm_jax.inference import DEFAULT_BATCH_SIZE


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "decompose", help="decompose spectra into SF and AGN parts",
        description="Decompose rest-frame spectra on the 2 A grid (3700-8114 A, 2208 bins) into SF and "
                    "AGN spectra, fractions, line ratios and BPT classes. Output keys: see README.")
    parser.add_argument("spectra", help=".npy array of shape (B, 2208), or (2208,) for one spectrum")
    parser.add_argument("--mass", help=".npy array with one positive mass per spectrum (needed unless "
                                       "--no-normalize)")
    parser.add_argument("--weights", default=str(DEFAULT_CHECKPOINT),
                        help=f"checkpoint directory made by `ddm-jax convert` (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("-o", "--output", help="output .npz (default: SPECTRA's name with _ddm.npz)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="spectra are already normalised as SPEC says; no mass needed")
    parser.add_argument("--bpt-scheme", default="standard", choices=SCHEMES,
                        help="[NII]-BPT classification: the standard scheme or the upstream notebook's")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.inference import Decomposer, ProgressPrinter
    from ddm_jax.io import load_array, save_npz_atomic

    spectra = load_array(args.spectra, "spectra")
    mass = None if args.mass is None else load_array(args.mass, "mass")
    output = Path(args.output or Path(args.spectra).with_suffix("").as_posix() + "_ddm.npz")
    decomposer = Decomposer.from_checkpoint(args.weights, bpt_scheme=args.bpt_scheme, batch_size=args.batch_size)
    result = decomposer(spectra, mass, normalize=not args.no_normalize, progress=ProgressPrinter())
    save_npz_atomic(output, {"wavelength": decomposer.wavelength, **result})
    print(f"decomposed {len(result['p_sf'])} spectra -> {output}")
    return 0

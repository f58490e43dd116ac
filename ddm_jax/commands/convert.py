"""`ddm-jax convert`: port the released weight files (or PyTorch-port state_dicts) to a checkpoint."""

from __future__ import annotations

from ddm_jax.config import PRESETS
from ddm_jax.io.checkpoint import DEFAULT_CHECKPOINT


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="port the DDM and regressor weight files to an Orbax checkpoint",
        description="Convert the DDM's and the line-ratio regressor's weight files (Keras HDF5 as "
                    "released, or state_dicts of the PyTorch port; in any order, recognised by content) "
                    "into one Orbax checkpoint directory.")
    parser.add_argument("weight_files", nargs=2, metavar="FILE",
                        help="e.g. WeightCLSm_NFSP_TO_ONE8.hdf5 Weight_REGms_BN29.hdf5")
    parser.add_argument("-o", "--output", default=str(DEFAULT_CHECKPOINT),
                        help=f"checkpoint directory to create (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--config", default="auto", choices=["auto", *PRESETS],
                        help="network configuration; 'auto' recognises it from the layer shapes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ddm_jax.io.checkpoint import convert_to_checkpoint

    ddm, regressor = convert_to_checkpoint(args.weight_files, args.output, args.config, args.overwrite)
    for item in (ddm, regressor):
        print(f"{item.network:9s} <- {item.source['file']} ({item.source['format']}, {item.preset} "
              f"configuration, sha256 {item.source['sha256'][:12]}...)")
    print(f"checkpoint written to {args.output}")
    return 0

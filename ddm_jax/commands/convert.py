"""`ddm-jax convert`: port the released weight files (or PyTorch-port state_dicts) to a checkpoint."""

from __future__ import annotations

import datetime

from ddm_jax import __version__
from ddm_jax.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
from ddm_jax.config import PRESETS, config_to_dict


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


def convert_to_checkpoint(weight_files, output, preset: str = "auto", overwrite: bool = False):
    """Convert both files and write the checkpoint; returns (ddm, regressor) ConvertedNetworks."""
    from ddm_jax_convert import convert_files  # h5py/torch readers load only for this command

    ddm, regressor = convert_files(list(weight_files), preset)
    metadata = {
        "ddm_config": config_to_dict(ddm.config), "regressor_config": config_to_dict(regressor.config),
        "presets": {"ddm": ddm.preset, "regressor": regressor.preset},
        "sources": {"ddm": ddm.source, "regressor": regressor.source},
        "converter_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    save_checkpoint(output, ddm.params, regressor.params, metadata, overwrite=overwrite)
    return ddm, regressor


def run(args) -> int:
    ddm, regressor = convert_to_checkpoint(args.weight_files, args.output, args.config, args.overwrite)
    for item in (ddm, regressor):
        print(f"{item.network:9s} <- {item.source['file']} ({item.source['format']}, {item.preset} "
              f"configuration, sha256 {item.source['sha256'][:12]}...)")
    print(f"checkpoint written to {args.output}")
    return 0

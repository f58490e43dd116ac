"""`ddm-jax decompose`: SF/AGN decomposition of spectra into an .npz file or, for surveys, a folder."""

from __future__ import annotations

from ddm_jax.inference.decomposer import DEFAULT_BATCH_SIZE
from ddm_jax.io.checkpoint import DEFAULT_CHECKPOINT
from ddm_jax.model.bpt import SCHEMES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "decompose", help="decompose spectra into SF and AGN parts",
        description="Decompose rest-frame spectra on the 2 A grid (3700-8114 A, 2208 bins) into SF and "
                    "AGN spectra, fractions, line ratios and BPT classes. Output keys: docs/usage.md#output-keys.")
    parser.add_argument("spectra", help=".npy array (B, 2208) or (2208,), a folder of .npy chunks "
                                        "(taken in name order), or a PREPARED.npz/.fits from `ddm-jax prepare`")
    parser.add_argument("--mass", help=".npy array (or folder of chunks) with one positive mass per spectrum, as "
                                       "the checkpoint takes it (expects.mass_convention); a PREPARED input "
                                       "brings its own (log_stellar_mass). Not needed with --no-normalize or a "
                                       "checkpoint that expects no mass (expects.needs_mass false: ones)")
    parser.add_argument("--mass-table", help="CSV or FITS table of log10 stellar masses (M_sun) joined on a PREPARED "
                                             "input's survey_id: columns survey_id (or PLATEID, MJD, FIBERID) and "
                                             "log_stellar_mass (or MPA-JHU's LGM_FIB_TOT_P50); see docs/usage.md")
    parser.add_argument("--ivar", help=".npy array (or folder of chunks) (B, 2208): the spectra's inverse variance, "
                                       "for reconstruction_chi2 (a PREPARED.npz carries its own); see docs/trust.md")
    parser.add_argument("--weights", default=str(DEFAULT_CHECKPOINT),
                        help=f"checkpoint directory made by `ddm-jax convert` (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("-o", "--output",
                        help="OUT.npz or OUT.fits (a FITS catalogue with provenance, docs/fits.md; both in "
                             "memory), or a folder: one .npy per key, written chunk by chunk with a manifest, for "
                             "inputs of any size, then `ddm-jax export` to FITS (default: SPECTRA's name + _ddm.npz)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted folder run")
    parser.add_argument("--no-normalize", action="store_true",
                        help="spectra are already normalised (docs/model.md#preprocessing); no mass needed")
    parser.add_argument("--bpt-scheme", default="standard", choices=SCHEMES,
                        help="[NII]-BPT classification: the standard scheme or the upstream notebook's")
    parser.add_argument("--samples", type=int, default=0,
                        help="Monte-Carlo dropout passes; adds the *_std keys (standard deviations of the "
                             "fractions and spectra). 0 (default) turns it off")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo dropout masks")
    parser.add_argument("--precision", default="float32", choices=["float32", "bf16"],
                        help="computation precision; bf16 is opt-in (params stay float32, outputs are float32; "
                             "docs/speed.md gives its measured deviation)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="spectra per device batch (and per checkpointed chunk of a folder run)")
    dist = parser.add_argument_group("multi-host (one process per host; each writes OUT.shareIofN, "
                                     "then `ddm-jax merge`)")
    dist.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() and process this host's share of the rows")
    dist.add_argument("--coordinator", help="host:port of process 0 (else from the cluster environment)")
    dist.add_argument("--num-processes", type=int)
    dist.add_argument("--process-id", type=int)
    parser.set_defaults(run=run)


def run(args) -> int:
    import jax

    from ddm_jax.inference.decomposer import Decomposer
    from ddm_jax.inference.streaming import decompose_files
    from ddm_jax.progress import Progress

    share = (0, 1)
    if args.distributed:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        share = (jax.process_index(), jax.process_count())
    decomposer = Decomposer.from_checkpoint(args.weights, bpt_scheme=args.bpt_scheme, batch_size=args.batch_size,
                                            samples=args.samples, seed=args.seed, precision=args.precision)
    written = decompose_files(decomposer, args.spectra, args.mass, args.output, normalize=not args.no_normalize,
                              resume=args.resume, share=share, progress=Progress("decompose"), ivar=args.ivar,
                              mass_table=args.mass_table)
    print(f"decomposed {args.spectra} -> {written}")
    if decomposer.trust is None:
        print(f"note: {args.weights} has no trust calibration: ood_score is NaN and trusted false for every "
              "spectrum; add one with `ddm-jax calibrate CHECKPOINT --library LIB.npz` (docs/trust.md)")
    return 0

"""Peak resident memory of a folder-output `ddm-jax decompose` run as the input grows.

    python benchmarks/streaming_memory.py --counts 20000 200000 [--config released|tiny]

For each count it writes that many random spectra (and masses) to .npy files, runs the real
CLI in a child process with folder output, and records the child's peak RSS
(`getrusage(RUSAGE_CHILDREN).ru_maxrss`) and its throughput. Each count's CLI run is the only
child of a small process of its own, which does nothing else: a fork inherits its parent's
resident pages into the child's peak, so the inputs are written elsewhere. Results go to
benchmarks/results/streaming_memory.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "streaming_memory.json"
WRITE_BLOCK = 8192  # rows generated at a time, so making the input does not need it all in memory


def make_inputs(folder: Path, count: int, n_bins: int = 2208) -> None:
    rng = np.random.default_rng(0)
    spectra = np.lib.format.open_memmap(folder / "spectra.npy", mode="w+", dtype=np.float32, shape=(count, n_bins))
    for lo in range(0, count, WRITE_BLOCK):
        hi = min(lo + WRITE_BLOCK, count)
        spectra[lo:hi] = 5.0 + rng.normal(size=(hi - lo, n_bins))
    spectra.flush()
    del spectra
    np.save(folder / "mass.npy", np.ones(count, np.float32))


def make_checkpoint(path: Path, config: str) -> None:
    from ddm_jax.config import PRESETS, config_to_dict
    from ddm_jax.io.checkpoint import save_checkpoint
    from ddm_jax.model.models import DDM, LineRatioRegressor, fresh_params

    ddm_config, regressor_config = PRESETS[config]
    save_checkpoint(path, fresh_params(DDM(ddm_config), 0), fresh_params(LineRatioRegressor(regressor_config), 1),
                    {"ddm_config": config_to_dict(ddm_config), "regressor_config": config_to_dict(regressor_config)})


def measure_one(count: int, checkpoint: Path, work: Path, batch_size: int) -> dict:
    """Runs in its own small process: its RUSAGE_CHILDREN peak is that of this count's CLI run alone."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ddm_jax.cli", "decompose", str(work / "spectra.npy"), "--mass",
                    str(work / "mass.npy"), "--weights", str(checkpoint), "-o", str(work / "out"),
                    "--batch-size", str(batch_size)], check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"spectra": count, "input_bytes": (work / "spectra.npy").stat().st_size,
            "peak_rss_mib": round(peak_kib / 1024, 1), "seconds": round(seconds, 1),
            "spectra_per_s": round(count / seconds, 1)}


def run_script(*args: str) -> str:
    return subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--config", default="released", choices=["released", "tiny"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)  # internal: write the inputs
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one count
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make is not None:
        make_inputs(Path(args.work), args.make)
        return
    if args.one is not None:
        work = Path(args.work)
        print(json.dumps(measure_one(args.one, work / "checkpoint", work, args.batch_size)))
        return
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        make_checkpoint(tmp / "checkpoint", args.config)
        for count in args.counts:
            run_script("--make", str(count), "--work", str(tmp))
            out = run_script("--one", str(count), "--work", str(tmp), "--batch-size", str(args.batch_size))
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
            for name in ("spectra.npy", "mass.npy", "out"):
                path = tmp / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    import jax

    from ddm_jax.io.safe import write_json_atomic

    write_json_atomic(RESULTS, {
        "what": "peak RSS of `ddm-jax decompose SPECTRA.npy -o FOLDER` (random weights, float32)",
        "config": args.config, "batch_size": args.batch_size, "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average": os.getloadavg(), "jax": jax.__version__,
        "date": datetime.date.today().isoformat(), "runs": rows})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

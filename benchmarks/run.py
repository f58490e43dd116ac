"""Side-by-side CPU benchmark of the DDM and the whole `decompose` pipeline, in one process.

    python -m benchmarks.run            # released networks, batches 1, 32, 256, 1024 (some minutes)
    python -m benchmarks.run --quick    # tiny networks, small batches: a smoke run of a few seconds

JAX float32 and bfloat16, PyTorch eager, `torch.compile` and Keras `predict` (each when
installed) run the same random-weight networks on the same inputs. Per workload and batch
size every framework is compiled / warmed up first, then timed in interleaved rounds (the
order rotates each round, so a load spike on a shared machine hits all of them alike);
spectra/s comes from the median round. Writes `<name>.json`, `<name>.md` and `<name>.png`
under `--out` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import pipelines
from benchmarks.pipelines import FRAMEWORKS, OUTPUT_KEYS, WORKLOADS
from ddm_jax.io.safe import write_atomic, write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "torch", "tensorflow-cpu", "tensorflow", "tf-keras")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny networks, batches 1 and 8, two rounds, no torch.compile")
    parser.add_argument("--preset", choices=("released", "tiny"),
                        help="networks (default: released; tiny with --quick)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 1 32 256 1024 (1 8 with --quick)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, help="default: every installed one")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--min-rounds", type=int, help="timed rounds at least (default 5; 2 with --quick)")
    parser.add_argument("--max-rounds", type=int, default=30, help="timed rounds at most")
    parser.add_argument("--budget", type=float,
                        help="seconds of timed rounds per workload and batch size, above --min-rounds "
                             "(default 30; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--name", help="file stem of the results (default cpu-<preset>)")
    args = parser.parse_args(argv)
    args.preset = args.preset or ("tiny" if args.quick else "released")
    args.batch_sizes = args.batch_sizes or ([1, 8] if args.quick else [1, 32, 256, 1024])
    args.min_rounds = args.min_rounds or (2 if args.quick else 5)
    args.budget = args.budget if args.budget is not None else (1.0 if args.quick else 30.0)
    args.name = args.name or f"cpu-{args.preset}"
    if args.frameworks is None:
        args.frameworks = [f for f in FRAMEWORKS if installed(f) and not (args.quick and f == "torch-compile")]
    return args


def installed(framework: str) -> bool:
    if framework.startswith("torch"):
        return importlib.util.find_spec("torch") is not None
    if framework == "keras":
        return pipelines.keras_available()
    return True


class PeakRSS:
    """Peak resident memory of this process above its level on entry, sampled every millisecond (psutil)."""

    def __init__(self):
        try:
            import psutil
        except ImportError:  # the `bench` extra installs it; without it memory is not reported
            self.process = None
        else:
            self.process = psutil.Process()
        self.peak_mb = None

    def __enter__(self):
        if self.process is not None:
            self.base = self.peak = self.process.memory_info().rss
            self.done = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.001):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        if self.process is not None:
            self.done.set()
            self.thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.peak_mb = (self.peak - self.base) / 2**20


def deviation(output: dict, reference: dict) -> dict:
    """How far a framework's outputs are from JAX float32's: per key, max and mean |diff| and max |diff|
    relative to max |reference|; for BPT classes the fraction that differ."""
    result = {}
    for key, ref in reference.items():
        got = output[key]
        if key == "bpt_class":
            result[key] = {"mismatch_fraction": float(np.mean(got != ref))}
            continue
        diff = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
        scale = float(np.abs(ref).max()) or 1.0
        result[key] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                       "max_rel": float(diff.max() / scale)}
    return result


def timed(runner, spectra, mass) -> tuple[float, dict]:
    start = time.perf_counter()
    out = runner(spectra, mass)
    return time.perf_counter() - start, out


def bench_cell(runners: dict, workload: str, batch: int, spectra, mass, args, log) -> dict:
    """Every runner on one batch: warm-up, interleaved timed rounds, memory, agreement with JAX float32."""
    x = pipelines.normalize_np(spectra, mass) if workload == "ddm" else spectra
    cell, outputs, estimate = {}, {}, {}
    for name, runner in list(runners.items()):
        try:
            estimate[name], outputs[name] = timed(runner, x, mass)  # compiles; an upper bound for the rounds
        except Exception as err:  # e.g. torch.compile without a working C++ toolchain: reported, not fatal
            log(f"  {name}: failed ({type(err).__name__}: {err}); dropped from {workload}")
            cell[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            del runners[name]
            continue
        cell[name] = {"first_call_s": estimate[name], "times_s": []}
    if not runners:
        return cell
    rounds = int(np.clip(args.budget / max(sum(estimate.values()), 1e-9), args.min_rounds, args.max_rounds))
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            cell[name]["times_s"].append(timed(runners[name], x, mass)[0])
    reference = outputs.get("jax-float32")
    for name, runner in runners.items():
        with PeakRSS() as memory:
            runner(x, mass)
        times = np.array(cell[name]["times_s"])
        cell[name].update(median_s=float(np.median(times)), min_s=float(times.min()),
                          iqr_s=float(np.subtract(*np.percentile(times, [75, 25]))),
                          spectra_per_s=batch / float(np.median(times)), rss_peak_increase_mb=memory.peak_mb)
        if isinstance(runner, pipelines.JaxRunner):
            cell[name]["xla_buffers_mb"] = runner.xla_memory_mb(x, mass)
        if reference is not None and name != "jax-float32":
            cell[name]["deviation_from_jax_float32"] = deviation(outputs[name], reference)
    return cell


def environment() -> dict:
    import jax

    cpu = {}
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text()
        cpu["model"] = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                             if line.startswith("model name")), platform.processor())
        flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        cpu["isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    env = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
           "cpu": cpu, "cpu_count": os.cpu_count(), "jax_devices": [str(d) for d in jax.devices()],
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "versions": versions}
    if importlib.util.find_spec("torch") is not None:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env


def run(args, log=print, save=lambda report: None) -> dict:
    """The whole benchmark; `save(report)` is called after every batch size, so an interrupted run keeps its results."""
    env = environment()
    env["load_average_start"] = os.getloadavg()
    log(f"benchmark: {args.preset} networks, batches {args.batch_sizes}, {', '.join(args.frameworks)}; "
        f"load average {env['load_average_start'][0]:.2f}")
    nets = pipelines.build_networks(args.preset, with_keras="keras" in args.frameworks)
    roofline = pipelines.matmul_roofline(size=512 if args.quick else 2048)
    log(f"matmul roofline: {roofline['float32_peak']:.0f} GFLOP/s float32 (bf16 {roofline['jax_bf16']:.0f})")
    spectra, mass = pipelines.make_inputs(max(args.batch_sizes), nets.ddm_config.n_bins)
    results = []
    report = {"environment": env, "preset": args.preset, "batch_sizes": args.batch_sizes,
              "frameworks": args.frameworks, "flops_per_spectrum": {w: pipelines.flops_per_spectrum(nets, w)
                                                                    for w in args.workloads},
              "matmul_roofline_gflops": roofline, "method": {
                  "statistic": "median of interleaved timed rounds after a compile/warm-up call",
                  "min_rounds": args.min_rounds, "max_rounds": args.max_rounds, "budget_s": args.budget,
                  "memory": "rss_peak_increase_mb: peak RSS during one call above the RSS before it (psutil, "
                            "1 ms); xla_buffers_mb: XLA's arguments + outputs + temporaries of the compiled program"},
              "results": results}
    for workload in args.workloads:
        flops = report["flops_per_spectrum"][workload]
        runners = {name: pipelines.make_runner(name, nets, workload) for name in args.frameworks}
        for batch in args.batch_sizes:
            cell = bench_cell(runners, workload, batch, spectra[:batch], mass[:batch], args, log)
            keras = cell.get("keras", {}).get("spectra_per_s")
            for name, entry in cell.items():
                if "spectra_per_s" in entry:
                    gflops = entry["spectra_per_s"] * flops / 1e9
                    entry.update(gflops_per_s=gflops, roofline_fraction=gflops / roofline["float32_peak"],
                                 ratio_to_keras=entry["spectra_per_s"] / keras if keras else None)
                results.append({"workload": workload, "batch": batch, "framework": name,
                                "dtype": "bfloat16" if name == "jax-bf16" else "float32", **entry})
            log(f"  {workload:8s} batch {batch:5d}: " + ", ".join(
                f"{name} {entry['spectra_per_s']:.0f}/s" for name, entry in cell.items() if "spectra_per_s" in entry))
            env["load_average_end"] = os.getloadavg()
            save(report)
    return report


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def paired_speedup(result: dict, baseline: dict) -> float | None:
    """Median over timed rounds of `result`'s speed over `baseline`'s in the same round.

    Every round runs each framework once, back to back, so a slow spell of a shared machine
    hits both sides of a pair; the median of these ratios is steadier than a ratio of medians.
    """
    ours, theirs = result.get("times_s"), baseline.get("times_s")
    if not ours or not theirs or len(ours) != len(theirs):
        return None
    return float(np.median(np.asarray(theirs) / np.asarray(ours)))


def markdown(report: dict) -> str:
    env = report["environment"]
    roof = report["matmul_roofline_gflops"]
    lines = [f"# DDM benchmark: {report['preset']} networks, {env['cpu'].get('model', 'CPU')}", "",
             f"- date {env['date']}, host {env['host']}, {env['cpu_count']} CPUs, "
             f"ISA {', '.join(env['cpu'].get('isa', []))}",
             f"- load average (1/5/15 min) at start {', '.join(f'{v:.2f}' for v in env['load_average_start'])}, "
             f"at end {', '.join(f'{v:.2f}' for v in env['load_average_end'])}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f", python {env['python']}",
             f"- XLA_FLAGS: `{env['xla_flags'] or '(none)'}`",
             f"- matmul roofline (best {roof['size']}^3 float32 matmul): {roof['float32_peak']:.0f} GFLOP/s "
             f"(NumPy {roof['numpy_float32']:.0f}, XLA {roof['jax_float32']:.0f}; XLA bf16 {roof['jax_bf16']:.0f})",
             "- FLOPs per spectrum: "
             + ", ".join(f"{w} {f / 1e6:.0f} M" for w, f in report["flops_per_spectrum"].items()),
             f"- {report['method']['statistic']}; memory: {report['method']['memory']}", ""]
    frameworks = report["frameworks"]
    by_key = {(r["workload"], r["batch"], r["framework"]): r for r in report["results"]}
    for workload in report["flops_per_spectrum"]:
        lines += [f"## {workload}: spectra/s (ratio to Keras `predict`)", "",
                  "| batch | " + " | ".join(frameworks) + " |", "|---:|" + "---:|" * len(frameworks)]
        for batch in report["batch_sizes"]:
            row = []
            for name in frameworks:
                r = by_key.get((workload, batch, name), {})
                if "spectra_per_s" in r:
                    ratio = r.get("ratio_to_keras")
                    row.append(f"{r['spectra_per_s']:.1f}" + (f" ({ratio:.2f}x)" if ratio else ""))
                else:
                    row.append("failed" if "error" in r else "-")
            lines.append(f"| {batch} | " + " | ".join(row) + " |")
        lines += ["", f"## {workload}: paired speed-up of JAX float32 (median over rounds of the same round's ratio)",
                  "", "| batch | over keras | over torch-eager | over torch-compile |", "|---:|---:|---:|---:|"]
        for batch in report["batch_sizes"]:
            jax_result = by_key.get((workload, batch, "jax-float32"), {})
            lines.append(f"| {batch} | " + " | ".join(
                _fmt(paired_speedup(jax_result, by_key.get((workload, batch, other), {})), ".2f")
                for other in ("keras", "torch-eager", "torch-compile")) + " |")
        lines += ["", f"## {workload}: GFLOP/s (% of roofline), peak RSS increase MB, XLA buffers MB", "",
                  "| batch | " + " | ".join(frameworks) + " |", "|---:|" + "---:|" * len(frameworks)]
        for batch in report["batch_sizes"]:
            row = []
            for name in frameworks:
                r = by_key.get((workload, batch, name), {})
                if "spectra_per_s" not in r:
                    row.append("-")
                    continue
                cell = f"{r['gflops_per_s']:.0f} ({100 * r['roofline_fraction']:.0f} %), " \
                       f"{_fmt(r['rss_peak_increase_mb'], '.0f')} MB"
                if r.get("xla_buffers_mb") is not None:
                    cell += f", XLA {r['xla_buffers_mb']:.0f} MB"
                row.append(cell)
            lines.append(f"| {batch} | " + " | ".join(row) + " |")
        largest = max(report["batch_sizes"])
        lines += ["", f"## {workload}: deviation from JAX float32 at batch {largest} "
                      "(max |diff| / max |reference|; BPT: fraction of classes that differ)", "",
                  "| framework | " + " | ".join(OUTPUT_KEYS[workload]) + " |",
                  "|---|" + "---:|" * len(OUTPUT_KEYS[workload])]
        for name in frameworks:
            dev = by_key.get((workload, largest, name), {}).get("deviation_from_jax_float32")
            if dev:
                lines.append(f"| {name} | " + " | ".join(
                    f"{dev[k]['mismatch_fraction']:.4f}" if k == "bpt_class" else f"{dev[k]['max_rel']:.2e}"
                    for k in OUTPUT_KEYS[workload]) + " |")
        lines.append("")
    errors = [r for r in report["results"] if "error" in r]
    if errors:
        lines += ["## Failures", ""] + [f"- {r['framework']} ({r['workload']}, batch {r['batch']}): {r['error']}"
                                        for r in errors] + [""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib  # a dependency of the package (`ddm-jax plot`)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(report["flops_per_spectrum"])
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        for name in report["frameworks"]:
            points = [(r["batch"], r["spectra_per_s"]) for r in report["results"]
                      if r["workload"] == workload and r["framework"] == name and "spectra_per_s" in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="spectra / s", title=workload)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:  # a workload not measured yet (results are saved after every batch size)
            ax.legend()
    env = report["environment"]
    fig.suptitle(f"{report['preset']} networks, {env['cpu'].get('model', 'CPU')}, {env['cpu_count']} CPUs, "
                 f"load {env['load_average_start'][0]:.1f}, {env['date'][:10]}")
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / args.name
    def save(report):  # each file whole or not at all: the previous results stay until replaced
        write_json_atomic(stem.with_suffix(".json"), report)
        write_text_atomic(stem.with_suffix(".md"), markdown(report))
        plot(report, stem.with_suffix(".png"))

    run(args, log=lambda message: print(message, file=sys.stderr, flush=True), save=save)
    print("wrote " + ", ".join(str(stem.with_suffix(s)) for s in (".json", ".md", ".png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of `ddm-jax prepare` on SDSS-like spectra, side by side in one process:

- `prepare`: the whole command's library function (`pipeline.run`: read an .npz of observed
  spectra, rebin, continuum and line fits, gate, write), after one warm-up batch that compiles;
- `previous line fit`: the line fit that `prepare` used before the continuum fit (Gaussian
  Balmer troughs, no templates), taken from git (PREVIOUS_COMMIT) when the checkout has it,
  timed on the same rebinned spectra;
- `pPXF`: pPXF (the field's reference fitter, one spectrum at a time) with the same BC03
  templates and its own gas templates, on a sample of the spectra.

    python -m benchmarks.prepare_speed --spectra 10000 --ppxf-sample 20

Writes benchmarks/results/prepare-speed.json and .md, with the CPU, its vector extensions, the
load average, the batch size and the versions. Spectra: a random mix of the BC03 populations,
broadened (60-250 km/s) and shifted, emission lines of random strength and ratios, z 0.02-0.1,
S/N ~20-50 per SDSS pixel, on SDSS's log-lambda grid.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ddm_jax.constants import EMISSION_LINES, SPEED_OF_LIGHT_KMS
from ddm_jax.io.loaders.registry import read_many
from ddm_jax.io.safe import write_json_atomic, write_text_atomic
from ddm_jax.spectra.resample import MAX_CHUNK, rebin_spectra

PREVIOUS_COMMIT = "7b1bb99"  # the last commit whose `prepare` fitted lines without a stellar continuum
SDSS_LOGLAM0, SDSS_DLOGLAM, SDSS_NPIX = np.log10(3800.0), 1e-4, 3850
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_description() -> dict:
    """Model and vector/matrix extensions of this CPU (Linux), for comparing runs across machines."""
    info = {"machine": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = text.splitlines()
        info["model"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        info["isa"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    except (OSError, StopIteration):
        pass
    return info


def make_spectra(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """SDSS-like observed spectra (module docstring) as `prepare`'s .npz array input."""
    from ddm_jax.astro.templates import load_templates

    rng = np.random.default_rng(seed)
    templates = load_templates()
    wavelength = 10 ** (SDSS_LOGLAM0 + SDSS_DLOGLAM * np.arange(SDSS_NPIX))
    log_template = np.log(templates.wavelength)
    flux = np.empty((count, SDSS_NPIX), np.float32)
    z = rng.uniform(0.02, 0.1, count)
    names = ("hbeta", "oiii_5007", "oi_6300", "halpha", "nii_6548", "nii_6584", "sii_6717", "sii_6731")
    centres = np.array([EMISSION_LINES[n] for n in names])
    for i in range(count):
        weights = rng.dirichlet(np.full(templates.flux.shape[0], 0.3))
        stars = weights @ templates.flux
        sigma = rng.uniform(60, 250) / templates.velscale
        x = np.arange(-int(5 * sigma) - 1, int(5 * sigma) + 2)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
        stars = np.convolve(stars, kernel / kernel.sum(), mode="same") * 100.0
        rest = wavelength / (1 + z[i]) / (1 + rng.uniform(-100, 100) / SPEED_OF_LIGHT_KMS)
        spectrum = np.interp(np.log(rest), log_template, stars)
        strengths = rng.uniform(5, 300) * rng.uniform(0.2, 3.0, len(names))
        width = centres * np.hypot(rng.uniform(40, 200), 69.0) / SPEED_OF_LIGHT_KMS
        gas_rest = wavelength / (1 + z[i])
        spectrum += (strengths / (np.sqrt(2 * np.pi) * width)
                     * np.exp(-0.5 * ((gas_rest[:, None] - centres) / width) ** 2)).sum(axis=1)
        noise = np.median(spectrum) / rng.uniform(20, 50)
        flux[i] = (spectrum + rng.normal(0, noise, SDSS_NPIX)) / (1 + z[i])
    ivar = np.broadcast_to(1.0 / (np.median(flux, axis=1, keepdims=True) / 35.0) ** 2, flux.shape).astype(np.float32)
    return {"wavelength": wavelength, "flux": flux, "ivar": ivar, "z": z}


def time_prepare(path: Path, count: int, batch: int) -> dict:
    from ddm_jax.prepare import pipeline

    with tempfile.TemporaryDirectory() as folder:
        warm = Path(folder) / "warm.npz"
        with np.load(path) as data:  # a first batch of the same shape compiles everything
            np.savez(warm, **{k: (data[k][:batch] if data[k].ndim and len(data[k]) == count else data[k])
                              for k in data.files})
        pipeline.run([str(warm)], str(Path(folder) / "warm_out.npz"), coverage="fill", snr_policy="warn",
                     log=lambda message: None)
        started = time.perf_counter()
        arrays = pipeline.run([str(path)], str(Path(folder) / "out.npz"), coverage="fill", snr_policy="warn",
                              log=lambda message: None)
        seconds = time.perf_counter() - started
    return {"spectra": count, "seconds": round(seconds, 2), "spectra_per_s": round(count / seconds, 2),
            "passing_gate": int(arrays["passes_gate"].sum()), "line_fit_ok": int(arrays["line_fit_ok"].sum())}


def previous_line_fit():
    """The pre-continuum line fit module, loaded from git, or None where git or the commit is missing."""
    root = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(["git", "show", f"{PREVIOUS_COMMIT}:ddm_jax/prepare/lines.py"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = Path(tempfile.mkdtemp())
    (folder / "previous_lines.py").write_text(source)
    spec = importlib.util.spec_from_file_location("previous_lines", folder / "previous_lines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_previous(grid: dict, batch: int) -> dict | None:
    import jax

    module = previous_line_fit()
    if module is None:
        return None
    flux, ivar = grid["flux"], grid["ivar"]
    batch = min(batch, len(flux))
    count = len(flux) // batch * batch
    jax.block_until_ready(module.measure_lines_batch(flux[:batch], ivar[:batch]))
    started = time.perf_counter()
    for start in range(0, count, batch):
        jax.block_until_ready(module.measure_lines_batch(flux[start:start + batch], ivar[start:start + batch]))
    seconds = time.perf_counter() - started
    return {"spectra": count, "seconds": round(seconds, 2), "spectra_per_s": round(count / seconds, 2),
            "what": f"lines.measure_lines_batch of commit {PREVIOUS_COMMIT}, on the rebinned spectra"}


def time_ppxf(grid: dict, sample: int) -> dict | None:
    """pPXF on `sample` rebinned rest-frame spectra: BC03 stars and gas lines as two kinematic components."""
    if importlib.util.find_spec("ppxf") is None:
        return None
    import ppxf.ppxf_util as util
    from ppxf.ppxf import ppxf

    from ddm_jax.astro.templates import load_templates
    from ddm_jax.constants import wavelength_grid

    wave = wavelength_grid().astype(np.float64)
    lam_range = np.array([wave[0] - 1, wave[-1] + 1])
    templates = load_templates()
    seconds = []
    for i in range(sample):
        galaxy, ln_lam, velscale = util.log_rebin(lam_range, grid["flux"][i].astype(np.float64))
        noise_lin = 1 / np.sqrt(np.maximum(grid["ivar"][i], 1e-30))
        noise = np.sqrt(util.log_rebin(lam_range, noise_lin.astype(np.float64) ** 2)[0])
        stars = np.stack([util.log_rebin(templates.wavelength[[0, -1]], t.astype(np.float64), velscale=velscale[0]
                                         if np.ndim(velscale) else velscale)[0] for t in templates.flux], axis=1)
        ln_lam_temp = util.log_rebin(templates.wavelength[[0, -1]], templates.flux[0].astype(np.float64),
                                     velscale=velscale)[1]
        gas, gas_names, _ = util.emission_lines(ln_lam_temp, lam_range, 2.76, vacuum=True)
        both = np.column_stack([stars / np.median(stars), gas])
        component = [0] * stars.shape[1] + [1] * gas.shape[1]
        started = time.perf_counter()
        ppxf(both, galaxy, noise, velscale, [[0.0, 100.0], [0.0, 100.0]], moments=[2, 2], degree=-1, mdegree=6,
             component=component, gas_component=np.array(component) > 0, gas_names=gas_names,
             lam=np.exp(ln_lam), lam_temp=np.exp(ln_lam_temp), quiet=True)
        seconds.append(time.perf_counter() - started)
    return {"spectra": sample, "seconds": round(float(np.sum(seconds)), 2),
            "spectra_per_s": round(sample / float(np.sum(seconds)), 3),
            "what": "ppxf() per spectrum: 40 BC03 templates + pPXF's gas lines, moments [2, 2], mdegree 6 "
                    "(templates and log-rebinning prepared outside the timing)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spectra", type=int, default=10000)
    parser.add_argument("--ppxf-sample", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default="prepare-speed")
    args = parser.parse_args(argv)
    import jax

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spectra.npz"
        np.savez(path, **make_spectra(args.spectra))
        results = {"prepare": time_prepare(path, args.spectra, MAX_CHUNK)}
        spectra, _ = read_many([path])
        grid = rebin_spectra(spectra)
    results["previous_line_fit"] = time_previous(grid, MAX_CHUNK)
    results["ppxf"] = time_ppxf(grid, args.ppxf_sample)
    versions = {name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "numpy")}
    if results["ppxf"] is not None:
        versions["ppxf"] = importlib.metadata.version("ppxf")
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "device": str(jax.devices()[0]),
              "dtype": "float32", "batch": MAX_CHUNK, "load_average_start": load_start,
              "load_average_end": os.getloadavg(), "versions": versions, "results": results,
              "python": sys.version.split()[0]}
    out = Path(args.out)
    write_json_atomic(out / f"{args.name}.json", report)
    ours = results["prepare"]["spectra_per_s"]
    lines = [f"# `prepare` speed, {report['date']}", "",
             f"{report['cpu'].get('model', 'CPU')} ({report['cpu'].get('cpu_count')} cores; "
             f"{', '.join(report['cpu'].get('isa', []))}), {report['device']}, float32, batch {report['batch']}, "
             f"load average {load_start[0]:.2f} -> {report['load_average_end'][0]:.2f}", "",
             "| what | spectra | seconds | spectra/s | prepare's speed-up |", "|---|---|---|---|---|"]
    for name, result in results.items():
        if result is not None:
            lines.append(f"| {name} | {result['spectra']} | {result['seconds']} | {result['spectra_per_s']} | "
                         f"{ours / result['spectra_per_s']:.2f}x |")
    write_text_atomic(out / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

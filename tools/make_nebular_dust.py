"""Build ddm_jax/data/nebular_dust.npz: intrinsic nebular line ratios of the two MAPPINGS 5.1 grids
that NebulaBayes 0.9.9 ships (HII regions, AGN narrow-line regions), and dust attenuation curves
(Calzetti et al. 2000; Cardelli, Clayton & Mathis 1989) on the DDM's rest-frame grid.

    pip download --no-deps nebulabayes==0.9.9 -d /tmp/nb
    pip install dust_extinction==1.7 extinction==0.4.9
    python tools/make_nebular_dust.py /tmp/nb/NebulaBayes-0.9.9-py2.py3-none-any.whl

Reads the FITS grids straight out of the wheel (nothing is fetched, NebulaBayes is not imported).
Needs numpy, astropy, dust_extinction and extinction (build-time only: the package never imports
them). Provenance and the derivation: nebular_dust.PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import astropy.units as u
import extinction
import numpy as np
from astropy.io import fits
from dust_extinction.parameter_averages import CCM89

from ddm_jax.constants import EMISSION_LINES, wavelength_grid
from ddm_jax.io.safe import save_npz_compressed_atomic, sha256_file

OUTPUT = Path(__file__).resolve().parent.parent / "ddm_jax" / "data" / "nebular_dust.npz"
GRID_MEMBERS = {"hii": "NebulaBayes/grids/NB_HII_grid.fits.gz", "nlr": "NebulaBayes/grids/NB_NLR_grid.fits.gz"}
PARAM_NAMES = {"hii": ("12 + log O/H", "log U", "log P/k"),
               "nlr": ("12 + log O/H", "log U", "log P/k", "log E_peak")}
# The NLR grid's other two oxAF parameters take one value each, so they are not stored.
NLR_FIXED = {"Gamma": 2.0, "p_NT": 0.15}

# Each of our lines as (grid column, divisor): the grid gives every line but the weaker member of
# two doublets whose ratio is fixed by atomic physics (the transitions share an upper level).
OIII_5007_4959 = 2.98
NII_6584_6548 = 3.05
LINE_SOURCES = {
    "oii_3726": ("OII3726", 1.0), "oii_3729": ("OII3729", 1.0), "hdelta": ("Hdelta", 1.0),
    "hgamma": ("Hgamma", 1.0), "hbeta": ("Hbeta", 1.0), "oiii_4959": ("OIII5007", OIII_5007_4959),
    "oiii_5007": ("OIII5007", 1.0), "oi_6300": ("OI6300", 1.0), "oi_6363": ("OI6364", 1.0),
    "nii_6548": ("NII6583", NII_6584_6548), "halpha": ("Halpha", 1.0), "nii_6584": ("NII6583", 1.0),
    "sii_6717": ("SII6716", 1.0), "sii_6731": ("SII6731", 1.0),
}

CURVES = ("calzetti00", "ccm89")
CALZETTI_RV = 4.05  # Calzetti et al. 2000, eq. 5
CCM_RV = 3.1


def read_grid(data_gz: bytes, member: str, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(params (N, P), fluxes relative to Hbeta (N, 14), rows dropped) of one grid, rows sorted by params."""
    with fits.open(io.BytesIO(gzip.decompress(data_gz))) as hdul:
        table = hdul[1].data
        columns = {col: np.asarray(table[col], np.float64) for col in table.columns.names}
    for col, value in (NLR_FIXED.items() if name == "nlr" else ()):
        if not np.allclose(columns[col], value, rtol=1e-6, atol=0):  # float32 in the file
            raise SystemExit(f"{member}: expected {col} = {value} everywhere")
    params = np.stack([columns[p] for p in PARAM_NAMES[name]], axis=1)
    hbeta = columns["Hbeta"]
    sources = [LINE_SOURCES[line] for line in EMISSION_LINES]
    fluxes = np.stack([columns[col] / divisor for col, divisor in sources], axis=1) / hbeta[:, None]
    # A NaN is a line MAPPINGS did not report (too faint: NebulaBayes reads it as 0). A zero line
    # would give an infinite log ratio, so such rows go, as do rows without a usable Hbeta.
    keep = (np.isfinite(hbeta) & (hbeta > 0) & np.all(np.isfinite(fluxes) & (fluxes > 0), axis=1)
            & np.all(np.isfinite(params), axis=1))
    params, fluxes = params[keep], fluxes[keep]
    order = np.lexsort(params.T[::-1])  # first parameter varies slowest
    return params[order], fluxes[order], int(np.count_nonzero(~keep))


def attenuation_curves(wavelength: np.ndarray) -> np.ndarray:
    """(2, len(wavelength)) A_lambda / A_V of CURVES at vacuum wavelengths in Angstrom."""
    # dust_extinction 1.7 has no Calzetti law (an attenuation curve, not an extinction one), so it
    # comes from `extinction`; checked against the published formula (Calzetti et al. 2000, eq. 4).
    calzetti = extinction.calzetti00(wavelength, 1.0, CALZETTI_RV)
    microns = wavelength / 1e4
    k_published = CALZETTI_RV + 2.659 * np.where(
        microns >= 0.63, -1.857 + 1.040 / microns,
        -2.156 + 1.509 / microns - 0.198 / microns**2 + 0.011 / microns**3)
    if not np.allclose(calzetti, k_published / CALZETTI_RV, rtol=1e-6, atol=0):
        raise SystemExit("extinction.calzetti00 disagrees with Calzetti et al. 2000, eq. 4")
    ccm = CCM89(Rv=CCM_RV)(wavelength * u.AA)
    return np.stack([calzetti, np.asarray(ccm, np.float64)])


def build(wheel: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The arrays of nebular_dust.npz and, per grid, how many rows were dropped."""
    arrays, dropped = {}, {}
    with zipfile.ZipFile(wheel) as zf:
        for name, member in GRID_MEMBERS.items():
            params, fluxes, dropped[name] = read_grid(zf.read(member), member, name)
            arrays[f"{name}_params"] = params.astype(np.float32)
            arrays[f"{name}_param_names"] = np.array(PARAM_NAMES[name])
            arrays[f"{name}_fluxes"] = fluxes.astype(np.float32)
    wavelength = wavelength_grid().astype(np.float64)
    line_wavelength = np.array(list(EMISSION_LINES.values()), np.float64)
    arrays |= {
        "line_names": np.array(list(EMISSION_LINES)),
        "line_wavelength": line_wavelength.astype(np.float32),
        "wavelength": wavelength.astype(np.float32),
        "curves": np.array(CURVES),
        "attenuation": attenuation_curves(wavelength).astype(np.float32),
        "line_attenuation": attenuation_curves(line_wavelength).astype(np.float32),
        "source": np.array(
            "MAPPINGS 5.1 HII and NLR grids of NebulaBayes 0.9.9 (Thomas et al. 2018), intrinsic fluxes / Hbeta, "
            f"[OIII]4959 = 5007/{OIII_5007_4959}, [NII]6548 = 6584/{NII_6584_6548}; A_lambda/A_V of Calzetti et al. "
            f"2000 (R_V {CALZETTI_RV}, extinction 0.4.9) and CCM89 (R_V {CCM_RV}, dust_extinction 1.7); "
            "see nebular_dust.PROVENANCE.md"),
    }
    return arrays, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="NebulaBayes-0.9.9-py2.py3-none-any.whl")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args()
    arrays, dropped = build(args.wheel)
    save_npz_compressed_atomic(args.output, arrays)
    print(f"wheel {args.wheel.name} sha256 {sha256_file(args.wheel)}")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, sha256 {sha256_file(args.output)})")
    for name in GRID_MEMBERS:
        params = arrays[f"{name}_params"]
        ranges = ", ".join(f"{p} {lo:g}..{hi:g} ({n} values)" for p, lo, hi, n in zip(
            PARAM_NAMES[name], params.min(0), params.max(0), [np.unique(c).size for c in params.T], strict=True))
        print(f"  {name}: {params.shape[0]} rows ({dropped[name]} dropped); {ranges}")
    for curve, values in zip(CURVES, arrays["line_attenuation"], strict=True):
        print(f"  {curve}: A/A_V at Hbeta {values[4]:.4f}, Halpha {values[10]:.4f}")


if __name__ == "__main__":
    main()

"""Derive prepare's target resolution (constants.TARGET_RESOLVING_POWER) from real MaNGA spectra.

    python tools/make_manga_resolution.py

The DDM was trained on MaNGA spectra, so `prepare` convolves every spectrum to MaNGA's resolution.
The target is the median resolving power R = lambda / FWHM over the seven DR15 (DRP v2_4_3)
spaxels of `ddm_jax/data/real_spectra/MaNGA_test_spectra.fits.gz` that have data (SRES, as the
MaNGA DAP ships it: see that folder's PROVENANCE.md), averaged over RESOLUTION_HALF_WINDOW either
side of each node of constants.TARGET_RESOLUTION_WAVELENGTH (a smooth curve: single spaxels
scatter by ~10 %). It prints the tuple to paste into constants.py; tests/spectra/test_instrument.py
recomputes it and compares.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddm_jax.constants import TARGET_RESOLUTION_WAVELENGTH

SOURCE = Path(__file__).resolve().parent.parent / "ddm_jax" / "data" / "real_spectra" / "MaNGA_test_spectra.fits.gz"
RESOLUTION_HALF_WINDOW = 100.0  # Angstrom


def manga_resolving_power(path: Path = SOURCE) -> tuple[float, ...]:
    """The median R of the file's spaxels with a valid SRES everywhere, at each node (rounded to 1)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        wave = np.asarray(hdul["WAVE"].data, np.float64)
        sres = np.asarray(hdul["SRES"].data, np.float64)
    valid = (sres > 0).all(axis=1)  # the spaxel outside the IFU has a meaningless SRES
    median = np.median(sres[valid], axis=0)
    return tuple(float(np.round(median[np.abs(wave - node) <= RESOLUTION_HALF_WINDOW].mean()))
                 for node in TARGET_RESOLUTION_WAVELENGTH)


if __name__ == "__main__":
    print("TARGET_RESOLVING_POWER = (" + ", ".join(f"{r:.0f}.0" for r in manga_resolving_power()) + ")")

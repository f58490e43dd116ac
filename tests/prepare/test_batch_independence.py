"""Issue 20: a spectrum's PREPARED arrays do not depend on what else the same `prepare` call holds.

A real SDSS spectrum and a real MaNGA spaxel are prepared alone and in a batch of 33 with a
spectrum of 0.6 A pixels (more pixels per rest-frame bin: another rebin program) and more MaNGA
spectra (33 rows: the fits run in 64-row batches, not 32): every array is the same to the bit.
"""

import dataclasses

import numpy as np

import ddm_jax
from ddm_jax.io.loaders.registry import read_any
from ddm_jax.prepare.pipeline import prepare_spectra
from ddm_jax.schema import SHARED_KEYS
from ddm_jax.spectra.resample import max_pixels, pixel_edges
from ddm_jax.spectra.spectrum import Spectrum, validate
from spectra_helpers import STRONG, ppxf_sdss_path, rest_density

REAL = ddm_jax.__file__.rsplit("/", 1)[0] + "/data/real_spectra"
BATCH = 33  # one more than the fits' smallest batch
FINE_STEP, FINE_Z = 0.6, 1.0


def _fine_spectrum() -> Spectrum:
    wavelength = np.arange(3690 * (1 + FINE_Z), 8130 * (1 + FINE_Z), FINE_STEP)
    flux = rest_density(pixel_edges(wavelength) / (1 + FINE_Z)) / (1 + FINE_Z)
    return Spectrum("fine", "fine.npz", wavelength, flux, np.full(flux.size, 4.0), np.ones(flux.size, bool), FINE_Z)


def _prepared(spectra) -> dict[str, np.ndarray]:
    # validate replaces a record's arrays: each run gets its own copies
    return prepare_spectra([validate(dataclasses.replace(s)) for s in spectra], coverage="fill",
                           snr_policy="warn", log=lambda line: None)


def _row(arrays: dict[str, np.ndarray], spectrum_id: str) -> dict[str, np.ndarray]:
    (row,) = np.flatnonzero(arrays["ids"] == spectrum_id)
    return {k: v if k in SHARED_KEYS else v[row] for k, v in arrays.items()}


def test_prepared_arrays_of_a_spectrum_are_the_same_bits_alone_and_in_a_mixed_batch():
    (sdss,) = read_any(ppxf_sdss_path(STRONG))
    manga = [s for s in read_any(f"{REAL}/MaNGA_test_spectra.fits.gz") if s.good.any()]
    fine = _fine_spectrum()
    assert max_pixels(fine) > max_pixels(sdss)
    others = [dataclasses.replace(manga[i % len(manga)], id=f"copy{i}") for i in range(BATCH - 3)]
    mixed = _prepared([fine, *others, sdss, manga[0]])
    assert len(mixed["ids"]) == BATCH
    for spectrum in (sdss, manga[0]):
        alone, among = _row(_prepared([spectrum]), spectrum.id), _row(mixed, spectrum.id)
        assert alone.keys() == among.keys()
        for key in alone:
            np.testing.assert_array_equal(among[key], alone[key], err_msg=f"{spectrum.id}: {key}")

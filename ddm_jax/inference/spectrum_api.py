"""specutils in, specutils and astropy out: `Decomposer` on `specutils.Spectrum` objects (docs/astropy.md).

    from specutils import Spectrum
    result = decomposer(Spectrum(flux=flux * u.Unit("1e-17 erg / (s cm2 Angstrom)"),
                                 spectral_axis=wave * u.AA, uncertainty=InverseVariance(ivar), redshift=0.03))
    result.table            # astropy Table: the FITS catalogue's columns, one row per spectrum
    result.sf_spectrum      # Spectrum on the rest-frame grid (as are agn_spectrum, residual, input)
    result.arrays           # the NumPy API's dict, for the same spectra

A spectrum in any spectral-axis unit (wavelength, frequency, energy, wavenumber) and any flux
density (per wavelength or per frequency) is put on the DDM's grid as `prepare` does: to the rest
frame with its redshift, flux density per Angstrom (the DDM's normalisation removes any constant
scale, not the F_nu -> F_lambda slope), an exact flux-conserving rebin. Wavelengths are taken as
vacuum ones (SDSS, MaNGA and DESI's). A spectrum already on the grid in the rest frame passes
unchanged, so it gives the same numbers as the same arrays given to the NumPy API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddm_jax.constants import N_BINS, wavelength_grid
from ddm_jax.errors import InputError
from ddm_jax.schema import SPECTRUM_KEYS
from ddm_jax.spectra.spectrum import Spectrum, validate

GRID_TOLERANCE_AA = 1e-3  # a spectral axis this close to the grid (rest frame) is taken as on it
F_LAMBDA = "erg / (s cm2 Angstrom)"


def is_spectrum(value) -> bool:
    """A specutils Spectrum (or Spectrum1D), or a list of them; judged without importing specutils."""
    if isinstance(value, list | tuple) and value:
        return all(is_spectrum(v) for v in value)
    return hasattr(value, "spectral_axis") and hasattr(value, "flux")


@dataclass
class SpectrumResult:
    """The decomposition of Spectrum inputs. Spectra are rest frame, on the 3700 + 2 i Angstrom grid,
    in the DDM's normalised units; `table` is the per-galaxy catalogue (`io.outputs.table.catalog_table`)."""

    sf_spectrum: object
    agn_spectrum: object
    residual: object
    input: object  # the normalised input the parts add up to: sf_fraction * SF + (1 - sf_fraction) * AGN - residual
    table: object
    arrays: dict

    def write(self, path):
        """The arrays as a FITS catalogue (path ending in .fits, docs/fits.md) or an .npz; returns the path."""
        from ddm_jax.io.outputs.files import write_output

        return write_output(path, self.arrays)


def _redshifts(spectra: list, z) -> np.ndarray:
    """One redshift per spectrum: `z` (scalar or one per spectrum), else each Spectrum's own."""
    if z is None:
        z = [float(getattr(getattr(s, "redshift", None), "value", 0.0)) for s in spectra]
    z = np.broadcast_to(np.asarray(z, np.float64), (len(spectra),)) if np.ndim(z) == 0 else np.asarray(z, np.float64)
    if z.shape != (len(spectra),):
        raise InputError(f"need one redshift per spectrum: {len(spectra)} spectra, z has shape {z.shape}")
    if not (np.isfinite(z) & (z >= 0)).all():
        raise InputError(f"redshifts must be finite and >= 0, got {z[~(np.isfinite(z) & (z >= 0))][0]}")
    return z


def _rows(spectrum) -> list:
    """A 2-D Spectrum (B, N) as B 1-D ones sharing its spectral axis."""
    if spectrum.flux.ndim == 1:
        return [spectrum]
    if spectrum.flux.ndim != 2:
        raise InputError(f"a Spectrum's flux must be 1-D or (B, N), got shape {spectrum.flux.shape}")
    return [spectrum[i] for i in range(spectrum.flux.shape[0])]


def _in_angstrom_per_angstrom(spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(wavelength Angstrom (observed), flux, ivar or None, good) of a 1-D Spectrum, increasing in
    wavelength. A flux density per frequency becomes one per Angstrom; any other unit is kept (the
    normalisation removes its scale)."""
    import astropy.units as u
    from astropy.nddata import StdDevUncertainty

    wavelength = spectrum.spectral_axis.to(u.AA, equivalencies=u.spectral())
    per_frequency = spectrum.flux.unit.is_equivalent(u.Jy)

    def per_angstrom(quantity):
        return quantity.to(F_LAMBDA, equivalencies=u.spectral_density(wavelength)) if per_frequency else quantity

    flux = per_angstrom(spectrum.flux).value
    ivar = None
    if spectrum.uncertainty is not None:
        std = per_angstrom(spectrum.uncertainty.represent_as(StdDevUncertainty).array * spectrum.flux.unit).value
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(np.isfinite(std) & (std > 0), 1.0 / std ** 2, 0.0)
    good = np.ones(flux.shape, bool) if spectrum.mask is None else ~np.asarray(spectrum.mask, bool)
    order = np.argsort(wavelength.value, kind="stable")  # a frequency axis runs the other way
    return (np.asarray(wavelength.value, np.float64)[order], np.asarray(flux, np.float64)[order],
            None if ivar is None else ivar[order], good[order])


def to_grid(spectra, z=None, coverage: str = "refuse") -> dict[str, np.ndarray]:
    """Spectrum (1-D or (B, N)) or a list of them -> flux (B, 2208) float32 on the rest-frame grid,
    ivar (B, 2208) (None when no spectrum has an uncertainty), mask (B, 2208) uint8 (resample bits) and z (B,).

    Bins the input does not cover: a DDMError (coverage 'refuse'), or interpolated and flagged ('fill').
    """
    from ddm_jax.spectra.resample import COVERAGE_POLICIES, coverage_message, rebin_spectra

    if coverage not in COVERAGE_POLICIES:
        raise InputError(f"coverage must be one of {COVERAGE_POLICIES}, got {coverage!r}")
    given = spectra if isinstance(spectra, list | tuple) else [spectra]
    rows = [row for spectrum in given for row in _rows(spectrum)]
    redshifts = _redshifts(rows, z)
    converted = [_in_angstrom_per_angstrom(row) for row in rows]
    has_ivar = any(c[2] is not None for c in converted)
    if has_ivar and not all(c[2] is not None for c in converted):
        raise InputError("some spectra have an uncertainty and some do not: give one to every spectrum or to none")
    grid = wavelength_grid().astype(np.float64)
    # on the grid, in the rest frame, every pixel usable: nothing to resample or fill
    on_grid = [w.shape == grid.shape and z_ == 0 and np.abs(w - grid).max() < GRID_TOLERANCE_AA
               and (good & np.isfinite(f) & (np.isfinite(v) & (v > 0) if v is not None else True)).all()
               for (w, f, v, good), z_ in zip(converted, redshifts)]
    flux = np.zeros((len(rows), N_BINS), np.float32)
    ivar = np.zeros((len(rows), N_BINS), np.float32)
    mask = np.zeros((len(rows), N_BINS), np.uint8)
    to_rebin = []
    for i, ((wave, values, weights, good), z_row) in enumerate(zip(converted, redshifts)):
        weights = np.ones_like(values) if weights is None else weights
        if on_grid[i]:  # the same numbers as arrays given directly
            flux[i], ivar[i] = values, weights
            continue
        spectrum = Spectrum(f"spectrum {i}", "Spectrum", wave, values, weights, good, float(z_row))
        to_rebin.append((i, validate(spectrum)))
    if to_rebin:
        rebinned = rebin_spectra([s for _, s in to_rebin])
        for k, (i, spectrum) in enumerate(to_rebin):
            message = coverage_message(spectrum, rebinned["mask"][k])
            if message is not None and coverage == "refuse":
                raise InputError(f"{message}; pass coverage='fill' to interpolate them (flagged in resample_mask)")
            flux[i], ivar[i], mask[i] = rebinned["flux"][k], rebinned["ivar"][k], rebinned["mask"][k]
    return {"flux": flux, "ivar": ivar if has_ivar else None, "mask": mask, "z": redshifts}


def _spectrum(values: np.ndarray, std: np.ndarray | None, meta: dict):
    import astropy.units as u
    from astropy.nddata import StdDevUncertainty
    from specutils import Spectrum

    return Spectrum(flux=values * u.dimensionless_unscaled, spectral_axis=wavelength_grid() * u.AA,
                    uncertainty=None if std is None else StdDevUncertainty(std), meta=dict(meta))


def decompose_spectra(decomposer, spectra, mass=None, normalize: bool = True, progress=None, z=None,
                      coverage: str = "refuse") -> SpectrumResult:
    """`Decomposer.__call__` for Spectrum inputs (module docstring)."""
    from ddm_jax.io.outputs.base import output_arrays
    from ddm_jax.io.outputs.table import catalog_table

    gridded = to_grid(spectra, z, coverage)
    arrays = decomposer(gridded["flux"], mass, normalize=normalize, progress=progress, ivar=gridded["ivar"])
    w = arrays["sf_fraction"][:, None]
    x = w * arrays["sf_spectrum"] + (1 - w) * arrays["agn_spectrum"] - arrays["residual"]  # residual's definition
    outputs = output_arrays(decomposer, arrays, {"z": gridded["z"], "resample_mask": gridded["mask"]},
                            command="Decomposer(Spectrum)", input="specutils.Spectrum", normalize=normalize)
    single = not isinstance(spectra, list | tuple) and np.ndim(spectra.flux) == 1
    meta = {"frame": "rest", "units": "DDM normalised flux (docs/model.md#preprocessing)"}

    def part(values, std):
        return _spectrum(values[0] if single else values,
                         None if std is None else (std[0] if single else std), {**meta, "z": gridded["z"].tolist()})

    parts = {key: part(arrays[key], arrays.get(f"{key}_std")) for key in SPECTRUM_KEYS}
    return SpectrumResult(**parts, input=part(x, None), table=catalog_table(outputs), arrays=outputs)

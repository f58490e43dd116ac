"""Stellar-population template sets bundled with the package (numpy only, no JAX).

    from ddm_jax.astro.templates import load_templates, mix
    ssp = load_templates()                    # "bc03": 40 BC03 SSPs, 10 ages x 4 metallicities
    young = ssp.select(ssp.ages_gyr < 1.0)    # a subset
    spectrum = mix(ssp, weights)              # (L,) a composite stellar population

`bc03` is the MPA-JHU set of Bruzual & Charlot (2003) simple stellar populations, on a
log-uniform rest-frame *vacuum* wavelength grid of 30 km/s per pixel covering 3500-8500 A, each
template scaled to unit median flux in 5300-5700 A. Its derivation, sources, licence and the
papers to cite: ddm_jax/data/templates_bc03.PROVENANCE.md (built by
tools/make_templates.py).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from importlib import resources
from pathlib import Path

import numpy as np

from ddm_jax.constants import SPEED_OF_LIGHT_KMS
from ddm_jax.errors import InputError
from ddm_jax.io.safe import load_npz
from ddm_jax.schema import TEMPLATE_KEYS

# Gaussian FWHM = 2 sqrt(2 ln 2) sigma
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _read_only(array, dtype) -> np.ndarray:
    """A private read-only copy: a frozen set's arrays can be shared (and cached) safely."""
    array = np.array(array, dtype=dtype)
    array.setflags(write=False)
    return array


# eq=False: the generated __eq__ would compare arrays with ==, which has no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class TemplateSet:
    """N template spectra on one log-uniform, rest-frame, vacuum wavelength grid of L pixels.

    Attributes (arrays are read-only copies):
        name: the set's name (e.g. "bc03").
        wavelength: (L,) float64, vacuum Angstrom, rest frame; ln(wavelength) has the constant
            step velscale / c.
        flux: (N, L) float32, flux density per Angstrom, each row scaled to unit median flux in
            5300-5700 A.
        ages_gyr: (N,) float64, age of each simple stellar population in Gyr.
        metallicities: (N,) float64, metallicity Z (mass fraction; solar is 0.02 in BC03).
        norms: (N,) float64, the factor each template was divided by (its median flux in
            5300-5700 A in the source's units; for BC03 presumably L_sun/A per M_sun formed).
            Light weights are mass weights times norms: `mix(ts, masses * ts.norms)`.
        fwhm_angstrom: the templates' own resolution, a Gaussian FWHM in Angstrom, the same at
            every wavelength.
        velscale: km/s per pixel of the log-uniform grid.
    """

    name: str
    wavelength: np.ndarray
    flux: np.ndarray
    ages_gyr: np.ndarray
    metallicities: np.ndarray
    norms: np.ndarray
    fwhm_angstrom: float
    velscale: float

    def __post_init__(self):
        fields = {"wavelength": np.float64, "flux": np.float32, "ages_gyr": np.float64,
                  "metallicities": np.float64, "norms": np.float64}
        for field, dtype in fields.items():
            object.__setattr__(self, field, _read_only(getattr(self, field), dtype))
        object.__setattr__(self, "fwhm_angstrom", float(self.fwhm_angstrom))
        object.__setattr__(self, "velscale", float(self.velscale))
        n, length = self.flux.shape if self.flux.ndim == 2 else (-1, -1)
        if self.wavelength.shape != (length,) or n < 1:
            raise InputError(f"template set {self.name!r}: flux {self.flux.shape} does not match "
                             f"wavelength {self.wavelength.shape} as (N, L) and (L,)")
        for field in ("ages_gyr", "metallicities", "norms"):
            if getattr(self, field).shape != (n,):
                raise InputError(f"template set {self.name!r}: {field} {getattr(self, field).shape}, expected ({n},)")

    def __repr__(self) -> str:  # the dataclass default would print every array
        return (f"TemplateSet({self.name!r}, {self.n_templates} templates, {self.wavelength.size} pixels "
                f"{self.wavelength[0]:.1f}-{self.wavelength[-1]:.1f} A, velscale {self.velscale:g} km/s, "
                f"FWHM {self.fwhm_angstrom:g} A)")

    @property
    def n_templates(self) -> int:
        """N, the number of templates."""
        return self.flux.shape[0]

    @property
    def log_wavelength(self) -> np.ndarray:
        """(L,) float64, the natural log of `wavelength`: uniform, with step velscale / c."""
        return np.log(self.wavelength)

    def sigma_kms(self, wavelength) -> np.ndarray | float:
        """The templates' resolution as a Gaussian velocity dispersion (km/s) at `wavelength`
        (vacuum Angstrom; scalar or array, same shape back). A constant FWHM in Angstrom is a
        dispersion that falls with wavelength: sigma = c * FWHM / (2.355 * lambda). A fit
        broadening the templates to a galaxy's resolution convolves with the quadrature difference."""
        wavelength = np.asarray(wavelength, np.float64)
        if np.any(~np.isfinite(wavelength) | (wavelength <= 0)):
            raise InputError("sigma_kms: wavelengths must be finite and positive (Angstrom)")
        sigma = SPEED_OF_LIGHT_KMS * self.fwhm_angstrom / (FWHM_PER_SIGMA * wavelength)
        return float(sigma) if sigma.ndim == 0 else sigma

    def select(self, mask) -> TemplateSet:
        """A subset of the templates, in their order here: `mask` is a boolean array (N,) or
        integer indices (e.g. `ts.select(~np.isclose(ts.ages_gyr, 0.64))` holds one age out). The grid,
        resolution and name stay the same. An empty selection raises DDMError."""
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (self.n_templates,):
                raise InputError(f"select: a boolean mask must have shape ({self.n_templates},), got {mask.shape}")
            index = np.flatnonzero(mask)
        elif mask.size == 0 or np.issubdtype(mask.dtype, np.integer):
            index = mask.astype(np.intp).reshape(-1)
            if np.any((index < -self.n_templates) | (index >= self.n_templates)):
                raise InputError(f"select: indices out of range for {self.n_templates} templates")
        else:
            raise InputError(f"select: expected a boolean mask or integer indices, got dtype {mask.dtype}")
        if index.size == 0:
            raise InputError(f"select: no templates selected from {self.name!r}")
        return dataclasses.replace(self, flux=self.flux[index], ages_gyr=self.ages_gyr[index],
                                   metallicities=self.metallicities[index], norms=self.norms[index])


def data_dir() -> Path:
    """The package's data folder, where template sets live as templates_<name>.npz."""
    return Path(str(resources.files("ddm_jax") / "data"))


def available() -> list[str]:
    """Names of the bundled template sets."""
    return sorted(path.stem.removeprefix("templates_") for path in data_dir().glob("templates_*.npz"))


def load_templates(name: str = "bc03") -> TemplateSet:
    """The bundled template set `name`, from ddm_jax/data/templates_<name>.npz (read with
    allow_pickle=False). A DDMError says what is wrong when no such set is bundled or its file
    is damaged. Loaded once per process: the arrays are read-only, so callers share them."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise InputError(f"template set name {name!r}: expected letters, digits, '_' or '-'")
    return _load(name)


@functools.lru_cache(maxsize=8)
def _load(name: str) -> TemplateSet:
    path = data_dir() / f"templates_{name}.npz"
    if not path.is_file():
        raise InputError(f"no template set {name!r} ({path} does not exist); bundled: "
                         f"{', '.join(available()) or 'none'}")
    arrays = load_npz(path, f"template set {name!r}", TEMPLATE_KEYS)
    try:
        templates = TemplateSet(name=name, wavelength=arrays["wavelength"], flux=arrays["flux"],
                                ages_gyr=arrays["ages_gyr"], metallicities=arrays["metallicities"],
                                norms=arrays["norms"], fwhm_angstrom=arrays["fwhm_angstrom"],
                                velscale=arrays["velscale"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: not a valid template set ({err})") from None
    if not (np.all(np.isfinite(templates.flux)) and np.all(np.diff(templates.wavelength) > 0)):
        raise InputError(f"{path}: damaged template set (non-finite flux or unsorted wavelengths)")
    return templates


def mix(templates: TemplateSet, weights) -> np.ndarray:
    """A composite stellar population: sum_i weights[i] * templates.flux[i].

    weights: (N,) for one spectrum, or (..., N) for a batch; finite and >= 0 (a star-formation
        history in units of each template's flux in 5300-5700 A, i.e. light fractions there when
        they sum to 1; from masses: `masses * templates.norms`).
    Returns (L,) or (..., L) float64. Negative, non-finite or wrongly shaped weights raise DDMError.
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim < 1 or weights.shape[-1] != templates.n_templates:
        raise InputError(f"mix: weights must have shape (..., {templates.n_templates}), got {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise InputError("mix: weights must be finite (no NaN or inf)")
    if np.any(weights < 0):
        raise InputError("mix: weights must be >= 0 (a star-formation history has no negative mass)")
    return weights @ templates.flux.astype(np.float64)

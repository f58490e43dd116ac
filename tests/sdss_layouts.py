"""SDSS files in the layouts no installed package ships, written with astropy from a DR8+ spec file's
values (pPXF's real SDSS DR18 spectra) after the published data models:

- DR7 `spSpec-MJD-PLATE-FIBER.fit` (classic.sdss.org/dr7/dm/flatFiles/spSpec.html): a (4, N)
  float32 primary image (spectrum, continuum-subtracted spectrum, error, mask), vacuum log10
  wavelengths from COEFF0 / COEFF1 (also as CRVAL1 / CD1_1), Z and PLATEID / MJD / FIBERID in the
  header, six unnamed binary tables of line measurements after it;
- SDSS-IV eBOSS `spec-PLATE-MJD-FIBER.fits` (data.sdss.org .../spectra/PLATE4/spec.html): COADD,
  then the spAll row in an HDU named SPALL (not SPECOBJ), then SPZLINE.

Used by the readers' tests and the fuzzer (tests/fuzzing.py), so no pytest here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DR7_STEP = 1e-4  # SDSS's log10-wavelength step
# spAll columns an eBOSS SPALL row carries (a subset of the DR16 spAll data model), taken from SPECOBJ
SPALL_COLUMNS = ("PROGRAMNAME", "CHUNK", "PLATE", "TILE", "MJD", "FIBERID", "RUN2D", "CLASS", "SUBCLASS", "Z",
                 "Z_ERR", "ZWARNING", "PLUG_RA", "PLUG_DEC")


def dr8_values(path: Path) -> dict:
    """The arrays and ids of a DR8+ spec file: loglam, flux, ivar, and_mask, model (N,) and the
    SPECOBJ row's z, plate, mjd, fiberid; `specobj` the row itself (for an SPALL copy)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        coadd, specobj = hdul["COADD"].data, hdul["SPECOBJ"].data
        values = {key: np.array(coadd[key]) for key in ("loglam", "flux", "ivar", "and_mask", "model")}
        values.update(z=float(specobj["Z"][0]), plate=int(specobj["PLATE"][0]), mjd=int(specobj["MJD"][0]),
                      fiberid=int(specobj["FIBERID"][0]),
                      specobj={name: specobj[name][:1].copy() for name in SPALL_COLUMNS},
                      formats={name: specobj.columns[name].format for name in SPALL_COLUMNS},
                      spzline=fits.BinTableHDU(hdul["SPZLINE"].data.copy(), name="SPZLINE"))
    return values


def write_spspec(values: dict, path: Path, mask_row: bool = True) -> Path:
    """A DR7 spSpec file of `values` (`dr8_values`); without `mask_row`, the image has three rows and
    the mask is a last, 1-d image HDU."""
    from astropy.io import fits

    loglam = values["loglam"].astype(np.float64)
    coeff0 = round(float(loglam[0]), 4)  # SDSS's log-wavelength lattice: multiples of 1e-4
    ivar = values["ivar"].astype(np.float64)
    error = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0)
    rows = [values["flux"], values["flux"] - values["model"], error]
    mask = values["and_mask"].astype(np.float32)
    image = np.stack(rows + ([mask] if mask_row else [])).astype(np.float32)
    primary = fits.PrimaryHDU(image)
    for key, value in (("COEFF0", coeff0), ("COEFF1", DR7_STEP), ("CRVAL1", coeff0), ("CD1_1", DR7_STEP),
                       ("CRPIX1", 1), ("CTYPE1", "LAMBDA"), ("DC-FLAG", 1), ("Z", values["z"]), ("Z_ERR", 1e-5),
                       ("Z_STATUS", 4), ("SPEC_CLN", 2), ("PLATEID", values["plate"]), ("MJD", values["mjd"]),
                       ("FIBERID", values["fiberid"]), ("BUNIT", "1E-17 erg/cm^2/s/Ang"), ("VACUUM", True)):
        primary.header[key] = value
    tables = [fits.BinTableHDU.from_columns([fits.Column("wave", "E", array=[6564.6]),
                                             fits.Column("height", "E", array=[1.0])]) for _ in range(6)]
    extra = [] if mask_row else [fits.ImageHDU(mask)]
    fits.HDUList([primary, *tables, *extra]).writeto(path)
    return path


def write_eboss(values: dict, path: Path, spall: dict | None = None) -> Path:
    """An eBOSS spec file of `values`: COADD, SPALL (the SPECOBJ row's spAll columns, or `spall`),
    SPZLINE."""
    from astropy.io import fits

    coadd = fits.BinTableHDU.from_columns(
        [fits.Column(name, fmt, array=values[name]) for name, fmt in
         (("flux", "E"), ("loglam", "E"), ("ivar", "E"), ("and_mask", "J"), ("model", "E"))], name="COADD")
    row = values["specobj"] if spall is None else spall
    columns = [fits.Column(name, values["formats"].get(name, "E"), array=array) for name, array in row.items()]
    primary = fits.PrimaryHDU()
    primary.header["PLATEID"], primary.header["MJD"] = values["plate"], values["mjd"]
    fits.HDUList([primary, coadd, fits.BinTableHDU.from_columns(columns, name="SPALL"),
                  values["spzline"]]).writeto(path)
    return path


def synthetic_values(n: int = 3000, seed: int = 0) -> dict:
    """`dr8_values` of a made-up SDSS spectrum, where pPXF's are not installed (the fuzzer)."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    loglam = (3.5793 + DR7_STEP * np.arange(n)).astype(np.float32)
    flux = (10 + rng.normal(size=n)).astype(np.float32)
    specobj = {"PLATE": np.array([945]), "MJD": np.array([52652]), "FIBERID": np.array([470]),
               "Z": np.array([0.05], np.float32)}
    return {"loglam": loglam, "flux": flux, "ivar": np.ones(n, np.float32), "and_mask": np.zeros(n, np.int32),
            "model": flux, "z": 0.05, "plate": 945, "mjd": 52652, "fiberid": 470, "specobj": specobj,
            "formats": {"PLATE": "J", "MJD": "J", "FIBERID": "J", "Z": "E"},
            "spzline": fits.BinTableHDU.from_columns([fits.Column("LINEWAVE", "D", array=[6564.6])],
                                                     name="SPZLINE")}

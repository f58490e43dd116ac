"""The loaders' registry: survey spectrum files and plain arrays into `Spectrum` records.

Each format is one module of this package (`sdss`, `sdss_dr7`, `desi`, `manga`, `arrays`) that registers its
reader here (`fits_loader`, `array_loader`), as specutils' loaders do: adding a format touches one
new module and the package's `__init__`, nothing else.

`read_any` recognises a FITS file by its content (HDU names), not by its name:

  SDSS spec-*.fits        COADD table (loglam, flux, ivar, and_mask); z from SPECOBJ (SDSS-I/II)
                          or SPALL (BOSS, eBOSS).
  SDSS DR7 spSpec-*.fit   primary image rows flux, continuum-subtracted flux, error, mask;
                          wavelengths 10 ** (COEFF0 + COEFF1 i); z from the header's Z.
  DESI coadd-*.fits       <ARM>_WAVELENGTH/_FLUX/_IVAR/_MASK per camera (B, R, Z) and FIBERMAP:
                          one spectrum per target, id `<file stem>#<TARGETID>`, the cameras merged
                          onto one grid (`merge_arms`); z from the redrock file next to it
                          (`desi_redshift_file`).
  MaNGA DRP LOGCUBE       FLUX/IVAR/MASK (N_wave, ny, nx) and WAVE: one spectrum per spaxel with any
                          good pixel, id `<plateifu>#x<i>y<j>`, `position` (i, j), `wcs` the cube's
                          celestial WCS. No redshift in the file: give --z or --z-table.
  MaNGA DRP LOGRSS        FLUX/IVAR/MASK (n_rows, N_wave) and WAVE: one spectrum per row (fibre and
                          exposure) with any good pixel, id `<plateifu>#f<k>`, `position` (k,).
  MaNGA DAP test spectra  WAVE, FLUX/IVAR/MASK (n, N) and Z (n) (sdss-mangadap's test files): one
                          spectrum per row, id `<file stem>#<row>`, z from Z.

Every reader raises `DDMError` with a message that starts with the file's path, so that a
batch can report the file and carry on with the rest (`read_many`). Errors about one spectrum
of a file (no redshift, every pixel masked) name the file and the spectrum's id (`describe`).

Wavelengths are observed-frame vacuum Angstrom (SDSS's, DESI's and MaNGA's convention; the DDM
was trained on MaNGA); `z` takes them to the rest frame. Flux is per Angstrom (all three surveys
write 1e-17 erg/s/cm2/A; prepare does not depend on the unit).

Masks. SDSS: and_mask != 0 is bad (DR7: the mask row != 0, or error <= 0). DESI: MASK != 0 is bad.
MaNGA cubes and the DAP test spectra
(MANGA_DRP3PIXMASK): MASK != 0 is bad, i.e. any of NOCOV, LOWCOV, DEADFIBER, FORESTAR, DONOTUSE,
the only bits defined (stricter than the DAP, which drops DONOTUSE and FORESTAR only). MaNGA RSS
(MANGA_DRP2PIXMASK): any bit but the informational SMEARIMAGE, SMEARHIGHSN, SMEARMEDSN (10-12) is
bad. Everywhere a pixel with ivar <= 0 or a non-finite value is bad as well (`validate`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ddm_jax.errors import DDMError, InputError, MissingFileError
from ddm_jax.io.fits import hdu_names, read_fits_guarded
from ddm_jax.spectra.spectrum import ARRAY_SUFFIXES, FITS_SUFFIXES, Spectrum, file_suffix, validate


@dataclasses.dataclass(frozen=True)
class FitsLoader:
    """A FITS layout: how to recognise it from the open file, and how to read it.

    `identify(names, hdul)` sees the HDU names and the open file; `parse(path, hdul)` returns its
    spectra; `finish(path, spectra)`, if given, runs after the file is closed (a companion file's
    redshifts). `description` None: a file that is recognised but holds no spectra to read.
    """

    name: str
    description: str | None
    identify: Callable
    parse: Callable
    priority: int
    finish: Callable | None = None


_FITS_LOADERS: dict[str, FitsLoader] = {}
_ARRAY_LOADERS: dict[str, Callable] = {}  # suffix -> reader
_COMPANIONS: list[Callable] = []  # path -> the file that belongs to it (not an input of its own) or None


def fits_loader(name: str, description: str | None, *, identify: Callable, priority: int,
                finish: Callable | None = None) -> Callable:
    """Register the decorated `parse(path, hdul)` as the reader of one FITS layout. Layouts are
    tried by ascending `priority`; the first whose `identify` says yes reads the file."""
    def register(parse):
        _FITS_LOADERS[name] = FitsLoader(name, description, identify, parse, priority, finish)
        return parse
    return register


def array_loader(*suffixes: str) -> Callable:
    """Register the decorated `read(path) -> list[Spectrum]` for files ending in `suffixes`."""
    def register(read):
        _ARRAY_LOADERS.update(dict.fromkeys(suffixes, read))
        return read
    return register


def companion_file(find: Callable) -> Callable:
    """Register `find(path)`: the companion of an input (e.g. a DESI coadd's redshift catalogue), which
    `expand_inputs` leaves out of a directory's inputs."""
    _COMPANIONS.append(find)
    return find


def layouts() -> dict[str, str]:
    """{layout name: description} of every registered FITS layout that holds spectra."""
    return {loader.name: loader.description for loader in _by_priority() if loader.description is not None}


def _by_priority() -> list[FitsLoader]:
    return sorted(_FITS_LOADERS.values(), key=lambda loader: loader.priority)


def fits_layout(hdul) -> str | None:
    """Which registered layout an open FITS file has (decided by its content), or None."""
    names = hdu_names(hdul)
    return next((loader.name for loader in _by_priority() if loader.identify(names, hdul)), None)


def read_fits(path: str | os.PathLike, expect: tuple[str, ...] | None = None) -> list[Spectrum]:
    """Any registered FITS layout, found by content; `expect` (layout names) refuses the others."""
    path = Path(path)

    def parse(hdul):
        layout = fits_layout(hdul)
        loader = _FITS_LOADERS.get(layout)
        # a layout without spectra is refused by its own parser, whatever was expected
        if loader is None or (expect is not None and layout not in expect and loader.description is not None):
            wanted = [d for name, d in layouts().items() if expect is None or name in expect]
            raise InputError(f"{path}: not a FITS layout ddm-jax reads (HDUs: {', '.join(hdu_names(hdul))}); "
                             f"it reads {'; '.join(wanted)}")
        return layout, loader.parse(path, hdul)

    layout, spectra = read_fits_guarded(path, parse)
    finish = _FITS_LOADERS[layout].finish
    if finish is not None:
        finish(path, spectra)
    return spectra


def expand_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the readable files of each directory (sorted, not recursive).

    In a directory, a file that is another's companion (`companion_file`: a DESI redshift
    catalogue next to its coadd) is not an input, and is left out.
    """
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            readable = FITS_SUFFIXES + ARRAY_SUFFIXES
            files = sorted(p for p in item.iterdir() if p.is_file() and file_suffix(p) in readable)
            companions = {find(p) for p in files for find in _COMPANIONS}
            paths.extend(p for p in files if p not in companions)
        else:
            paths.append(item)
    return paths


def read_any(path: Path) -> list[Spectrum]:
    """FITS files by content (`read_fits`), arrays by suffix; raises DDMError naming the file."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file")
    suffix = file_suffix(path)
    if suffix in FITS_SUFFIXES:
        return read_fits(path)
    if suffix in _ARRAY_LOADERS:
        return _ARRAY_LOADERS[suffix](path)
    raise InputError(f"{path}: unknown file type {suffix!r} (want {', '.join(FITS_SUFFIXES + ARRAY_SUFFIXES)})")


def read_many(paths: list[Path], z_override: dict[str, float] | None = None,
              z_all: float | None = None, ebv_override: dict[str, float] | None = None,
              ebv_all: float | None = None) -> tuple[list[Spectrum], list[str]]:
    """Read and validate every file; a bad one adds its message to `errors` and is skipped, and
    so does a bad spectrum of a file that holds several (the others go on).

    z_all, if given, replaces every redshift; z_override maps spectrum id to redshift, and for
    an id `<name>#<part>` (one of several spectra in a file) not in it, `<name>` (e.g. a MaNGA
    plateifu, or the file name of an .npz) gives the redshift of all of them.
    The Galactic E(B-V) of a spectrum whose file carries none comes from ebv_override (by id or
    `<name>` as for z), else ebv_all. Returns (spectra, errors).
    """
    spectra, errors = [], []
    for path in paths:
        try:
            found = read_any(path)
        except DDMError as err:
            errors.append(str(err))
            continue
        for spectrum in found:
            if z_all is not None:
                spectrum.z = z_all
            elif z_override:
                group = spectrum.id.split("#", 1)[0]
                z = z_override.get(spectrum.id, z_override.get(group) if "#" in spectrum.id else None)
                if z is not None:
                    spectrum.z = z
            if spectrum.ebv is None:
                spectrum.ebv = _by_id(ebv_override or {}, spectrum.id, ebv_all)
        if len(found) > 1 and all(s.z is None for s in found):  # e.g. a MaNGA cube without --z: one line
            notes = {s.z_note for s in found}
            why = f"{notes.pop()}; " if len(notes) == 1 and None not in notes else ""
            named = ", ".join(s.id for s in found[:3]) + (", ..." if len(found) > 3 else "")
            errors.append(f"{path}: no redshift for any of its {len(found)} spectra ({named}; {why}give one "
                          "with --z or --z-table, by spectrum id or by the part of the id before '#')")
            continue
        for spectrum in found:
            try:
                spectra.append(validate(spectrum))
            except DDMError as err:
                errors.append(str(err))
    return spectra, errors


def _by_id(table: dict[str, float], spectrum_id: str, default: float | None) -> float | None:
    """A table's value for an id, or for `<name>` of an id `<name>#<part>`, else `default`."""
    group = spectrum_id.split("#", 1)[0]
    value = table.get(spectrum_id, table.get(group) if "#" in spectrum_id else None)
    return default if value is None else value

"""Build ddm_jax/data/real_eval.npz, the committed real-spectrum evaluation set (ddm_jax.evaluation.real_eval).

    pip install ppxf        # ships the two SDSS DR18 spectra
    python tools/make_real_eval.py [--output PATH]

`prepare --coverage fill --snr-policy warn` over every real spectrum the project can use: the
committed DESI and MaNGA files in real_spectra/ and pPXF's SDSS spectra of NGC 3073 and NGC 3522.
Every readable spectrum is kept: partial coverage filled (mask bit FILLED), gate failures flagged.
Added per spectrum: name, survey and the measured [NII]-BPT class (real_eval.measured_class);
`source` becomes a path that holds on any machine; the per-spectrum fitted models (continuum,
line_model, template_weights) are dropped. Written compressed, with fixed zip timestamps.
Provenance: real_spectra/PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddm_jax.errors import DDMError
from ddm_jax.evaluation.real_eval import measured_class
from ddm_jax.io.loaders.registry import expand_inputs, read_many
from ddm_jax.io.safe import save_npz_compressed_atomic, sha256_file
from ddm_jax.prepare import pipeline
from ddm_jax.progress import log as log_line

HERE = Path(__file__).resolve().parent.parent / "ddm_jax" / "data"  # the bundled data folder
OUTPUT = HERE / "real_eval.npz"
REAL_SPECTRA = HERE / "real_spectra"
# pPXF's copies of SDSS DR18 spectra (as pPXF 9.5.2 ships them): name with plate-MJD-fibre (the
# files' SPECOBJ table), SHA-256. Another pPXF release might ship other bytes: checked, not assumed.
PPXF_SPECTRA = {
    "NGC3073_SDSS_DR18": ("SDSS NGC 3073 (945-52652-470)",
                          "5bbfb6221ee578dfbfe8fe25ef26d62e1d20901e14bcef56e48f06c7e8d8e0c2"),
    "NGC3522_SDSS_DR18": ("SDSS NGC 3522 (2488-54149-1)",
                          "f8ae8b105183728fc2d07d4e3ea3094306971f0fea33b8efe00088882841b958"),
}
DROPPED_KEYS = ("continuum", "line_model", "template_weights")
# MaNGA_test_spectra rows: (plate-IFU, spaxel x, y), from the wheel's compile_test_spectra script
# (real_spectra/PROVENANCE.md). Row 5 lies outside the IFU: the reader refuses it.
MANGA_TEST_SPAXELS = {0: ("8131-6102", 27, 27), 1: ("8131-3702", 22, 22), 2: ("8258-6102", 27, 27),
                      3: ("8329-1901", 19, 14), 4: ("8138-12704", 37, 37), 5: ("7815-6101", 37, 46),
                      6: ("7815-6101", 37, 37), 7: ("9494-3703", 26, 26)}
DESI_PRODUCTIONS = {"4-80613-thru20210324": "tile 80613", "special-dark-27247": "HEALPix 27247"}


def ppxf_spectra_dir() -> Path:
    spec = importlib.util.find_spec("ppxf")
    if spec is None or spec.origin is None:
        raise DDMError("pPXF is not installed: it ships the SDSS spectra (pip install ppxf)")
    return Path(spec.origin).parent / "spectra"


def source_paths() -> list[Path]:
    """The inputs of `prepare`, in the order of the set's rows (folder contents sorted, then SDSS)."""
    paths = expand_inputs([REAL_SPECTRA]) + [ppxf_spectra_dir() / f"{stem}.fits" for stem in PPXF_SPECTRA]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DDMError(f"real spectra missing: {', '.join(missing)}")
    for stem, (_, expected) in PPXF_SPECTRA.items():
        path = ppxf_spectra_dir() / f"{stem}.fits"
        if sha256_file(path) != expected:
            raise DDMError(f"{path}: SHA-256 {sha256_file(path)}, expected {expected} (the file of pPXF 9.5.2)")
    return paths


def name_and_survey(spectrum_id: str) -> tuple[str, str]:
    """A spectrum id of `prepare` (file stem, '#' and its row or TARGETID) -> (name, survey)."""
    stem, _, part = spectrum_id.partition("#")
    if stem in PPXF_SPECTRA:
        return PPXF_SPECTRA[stem][0], "SDSS"
    if stem.startswith("coadd-") and stem[len("coadd-"):] in DESI_PRODUCTIONS:
        return f"DESI {DESI_PRODUCTIONS[stem[len('coadd-'):]]} TARGETID {part}", "DESI"
    if stem == "MaNGA_test_spectra" and int(part) in MANGA_TEST_SPAXELS:
        plateifu, x, y = MANGA_TEST_SPAXELS[int(part)]
        return f"MaNGA {plateifu} spaxel ({x}, {y})", "MaNGA"
    if stem == "MaNGA_multicomp_test_spectra":
        return f"MaNGA multicomponent test #{part}", "MaNGA"
    raise DDMError(f"{spectrum_id}: not one of the real spectra this script knows")


def portable_source(path: str) -> str:
    """The file as a path inside the package that holds it (this one's or pPXF's)."""
    path = Path(path).resolve()
    for root, prefix in ((HERE.parent, "ddm_jax"), (ppxf_spectra_dir().parent, "ppxf")):
        if path.is_relative_to(root):
            return f"{prefix}/{path.relative_to(root).as_posix()}"
    raise DDMError(f"{path}: not inside ddm_jax or ppxf")


def build(log: Callable[[str], None] = log_line) -> dict[str, np.ndarray]:
    """The set's arrays (ddm_jax.real_eval module docstring)."""
    spectra, errors = read_many(source_paths())
    for message in errors:
        log(message)
    arrays = pipeline.prepare_spectra(spectra, coverage="fill", snr_policy="warn", log=log)
    arrays = {key: value for key, value in arrays.items() if key not in DROPPED_KEYS}
    names, surveys = zip(*map(name_and_survey, arrays["ids"]))
    arrays.update(name=np.array(names), survey=np.array(surveys),
                  source=np.array([portable_source(s) for s in arrays["source"]]),
                  measured_class=measured_class(arrays["line_snr"], arrays))
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        arrays = build()
    except DDMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    save_npz_compressed_atomic(args.output, arrays)
    print(f"wrote {args.output}: {len(arrays['ids'])} spectra, {int(arrays['passes_gate'].sum())} passing the gate, "
          f"{args.output.stat().st_size} bytes, sha256 {sha256_file(args.output)} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

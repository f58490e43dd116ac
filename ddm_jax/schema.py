"""The keys of every file ddm-jax reads or writes, in one place (docs/fits.md, docs/architecture.md).

Every module that writes or reads one of these formats imports its keys from here:

- OUT (`decompose`: an .npz, a streamed folder or a FITS catalogue): OUTPUT_KEYS, TRUST_KEYS,
  STD_KEYS (Monte-Carlo dropout), SHARED_KEYS, and from a PREPARED input CARRIED_KEYS, GATE_KEYS and
  `measured_` + MEASURED_KEYS;
- PREPARED (`prepare`): PREPARED_KEYS at least, PREPARED_FORMAT;
- a streamed folder: FOLDER_FILES, and SAME_JOB (what the shares of one job must agree on);
- the FITS catalogue: CATALOG_FORMAT, its HDU names, the column descriptions and units, the
  provenance cards;
- inputs: SPECTRA_NPZ_KEYS and SPECTRA_CSV_COLUMNS (plain-array spectra), REAL_SET_KEYS (the bundled
  real evaluation set), EXPECTS_KEYS (what a checkpoint says it expects), TRUST_FILE, and the
  bundled tables' keys.
"""

# ----------------------------------------------------------------------------- OUT

# The output contract of `decompose` (and of OUT.npz, with `wavelength`), in order, then the
# trust outputs TRUST_KEYS (docs/trust.md).
# line_ratios (B, 3, 8) and bpt_class (B, 3): axis 1 is (composite, SF part, AGN part).
OUTPUT_KEYS = ("sf_spectrum", "agn_spectrum", "p_sf", "p_agn", "p_total", "sf_fraction",
               "residual", "line_ratios", "bpt_class")

# The trust outputs (after OUTPUT_KEYS): reconstruction_chi2, ood_score (B,) float32, trusted (B,) bool.
TRUST_KEYS = ("reconstruction_chi2", "ood_score", "trusted")

# Monte-Carlo dropout outputs (`samples` > 0): standard deviations over the dropout passes.
STD_KEYS = ("sf_spectrum_std", "agn_spectrum_std", "p_sf_std", "p_agn_std", "p_total_std", "sf_fraction_std")

# Keys that are not per spectrum: the wavelength goes into each image's WCS, the rest into the layout.
SHARED_KEYS = ("wavelength", "line_names", "format", "provenance")

PARTS = ("composite", "sf", "agn")  # axis 1 of line_ratios and bpt_class

PART_LABELS = {"composite": "input spectrum", "sf": "SF part", "agn": "AGN part"}

# The stellar mass inside each spectrum's aperture, (B,) float32 each (ddm_jax.prepare.mass): written by
# every `prepare` since they were added, absent from older files (decompose then asks for --mass-table).
PREPARED_MASS_KEYS = ("log_stellar_mass", "log_stellar_mass_err")

# PREPARED's frame (ddm_jax.prepare.frame): Galactic E(B-V), resolution against MaNGA's, a spaxel's
# own velocity. Not required of a PREPARED file (older ones lack them).
FRAME_KEYS = ("ebv_galactic", "lsf_coarser_fraction", "resolution_sigma_kms", "spaxel_velocity")

# PREPARED keys carried as they are (those it has): ids, redshift, where each spectrum lies in its
# file, a cube's celestial WCS (the FITS writer draws maps with them), prepare's stellar mass and the frame,
CARRIED_KEYS = ("ids", "survey_id", "z", "position", "source", "wcs", *PREPARED_MASS_KEYS, *FRAME_KEYS)

# The mass each spectrum was divided by (B,) float32, as the network took it (the checkpoint's
# mass_convention, provenance item mass_convention; where it came from: mass_source): written when
# decompose normalised with a mass (--mass, --mass-table or PREPARED log_stellar_mass).
MASS_USED = "mass_used"

# and its gate's verdicts.
GATE_KEYS = ("meets_snr", "line_fit_ok", "broad_balmer", "passes_gate")

# PREPARED.npz's measured line ratios and BPT class, carried into the output as measured_<key>.
MEASURED_KEYS = ("log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha", "bpt_nii")

# What a figure of a decomposition reads (`ddm-jax plot`, the report).
FIGURE_KEYS = ("wavelength", "sf_spectrum", "agn_spectrum", "sf_fraction", "residual", "line_ratios")

# The outputs that are spectra, returned as specutils Spectrum objects by the Spectrum API.
SPECTRUM_KEYS = ("sf_spectrum", "agn_spectrum", "residual")

# ----------------------------------------------------------------------------- PREPARED

PREPARED_FORMAT = "ddm-jax-prepared/2"

# What a PREPARED file must hold (the whole list: ddm_jax.prepare.pipeline's docstring).
PREPARED_KEYS = (
    "flux", "ivar", "mask", "wavelength", "z", "ids", "line_names", "line_flux", "line_flux_err",
    "line_snr", "meets_snr", "line_fit_ok", "broad_balmer", "passes_gate", "log_nii_ha", "log_oiii_hb",
    "log_sii_ha", "log_oi_ha", "position",
)
# Beside them PREPARED has PREPARED_MASS_KEYS and FRAME_KEYS (defined with CARRIED_KEYS, above), and
# what prepare writes beside them from the line fit and the gate (files of earlier versions lack
# them: not required on reading; ddm_jax.prepare.pipeline's docstring says what each holds).
PREPARED_LINE_FIT_KEYS = (
    "line_amp_noise", "line_ew", "whan", "bpt_oi", "bpt_kewley06", "line_sigma_balmer", "sii_at_bound",
    "line_wing", "wing_flux", "wing_velocity", "wing_sigma", "wing_delta_bic", "broad_snr",
    "filled_share", "filled_lines", "filled_ok",
)

# ----------------------------------------------------------------------------- a streamed folder

# The folder's manifest (written last: a folder with one is complete), the job it was started with
# (a resume must match it) and the chunks done so far.
FOLDER_FILES = MANIFEST, JOB, DONE = "manifest.json", "job.json", "done.json"
SAME_JOB = ("spectra", "mass", "ivar", "normalize", "decomposer", "total")  # what the shares of one job share


# ----------------------------------------------------------------------------- the FITS catalogue

CATALOG_FORMAT = "ddm-jax-catalog/1"

CATALOG, SOURCES = "CATALOG", "SOURCES"

# What the columns mean (TTYPE comments) and their units (TUNIT) where there is one. Ratios are
# log10 of flux ratios; spectra are in the DDM's normalised units (docs/model.md#preprocessing).
DESCRIPTIONS = {
    "ids": "spectrum id (file name, or name#row)", "z": "redshift used to reach the rest frame",
    "survey_id": "survey key as prepare read it", "survey": "sdss, desi, manga or ''",
    "plate": "SDSS plate (or MaNGA plate)", "mjd": "SDSS MJD", "fiberid": "SDSS fiber",
    "targetid": "DESI TARGETID", "plateifu": "MaNGA plate-IFU", "spaxel_x": "MaNGA cube spaxel x (0-based)",
    "spaxel_y": "MaNGA cube spaxel y (0-based)",
    "p_sf": "DDM SF probability", "p_agn": "DDM AGN probability", "p_total": "DDM p_sf + p_agn",
    "sf_fraction": "SF share of the spectrum, clip(p_sf, 0, 1)",
    "reconstruction_chi2": "reduced chi2 of the reconstruction (needs ivar)",
    "ood_score": "distance from the training data (docs/trust.md)", "trusted": "in domain and well fitted",
    "meets_snr": "S/N > 8 in the BPT lines", "line_fit_ok": "the line fit describes the data",
    "broad_balmer": "broad Hbeta or Halpha found (type-1 AGN)",
    "passes_gate": "meets_snr, line_fit_ok, filled_ok, no broad lines",
    "position": "cube spaxel (x, y) or RSS row (k, -1); (-1, -1) elsewhere", "source": "input file",
    "bpt_nii": "[NII] BPT class of the measured ratios", "bpt_sii": "[SII] BPT class of the measured ratios",
    "log_stellar_mass": "prepare: log10 stellar mass formed in aperture [log Msun]",
    "log_stellar_mass_err": "prepare: error of log_stellar_mass [dex]",
    MASS_USED: "mass the DDM divided by (MASSCONV; from MASSSRC)",
    "ebv_galactic": "Galactic E(B-V) corrected for (F99, R_V 3.1)",
    "lsf_coarser_fraction": "share of pixels coarser than MaNGA resolution",
    "resolution_sigma_kms": "instrumental sigma at 5500 A rest", "spaxel_velocity": "spaxel velocity, rebinned at",
    "bpt_oi": "[OI] BPT class of the measured ratios", "bpt_kewley06": "Kewley 2006 class of the three diagrams",
    "whan": "WHAN class (Cid Fernandes 2011)", "line_wing": "a second (wing) component was kept (BIC)",
    "filled_ok": "no filled bin at a required line, few filled", "filled_share": "share of bins interpolated",
}

UNITS = {"line_velocity": "km/s", "line_sigma": "km/s", "stellar_velocity": "km/s", "stellar_sigma": "km/s",
         "ebv_galactic": "mag", "resolution_sigma_kms": "km/s", "spaxel_velocity": "km/s",
         "line_sigma_balmer": "km/s", "wing_velocity": "km/s", "wing_sigma": "km/s", "line_ew": "Angstrom"}

# Spectrum-shaped arrays: their image HDU's BUNIT comment.
SPECTRUM_UNITS = {"flux": "rest-frame flux density as the survey gives it", "ivar": "inverse variance of flux",
                  "mask": "resample bits: 0 measured", "continuum": "fitted stellar continuum, flux units",
                  "line_model": "fitted narrow lines, flux units",
                  "resample_mask": "resample bits: 0 measured"}

# PREPARED (B, n_lines) -> one column per line
SPLIT_BY_LINE = ("line_flux", "line_flux_err", "line_snr", "line_amp_noise", "line_ew", "wing_flux")

# Provenance items and their header keywords (8 characters, FITS standard).
PROVENANCE_CARDS = {
    "ddm_jax_version": ("DDMVERS", "ddm-jax version that wrote the results"),
    "created": ("DATE", "when the results were made (UTC)"), "command": ("DDMCMD", "ddm-jax command"),
    "input": ("INPUT", "spectra decomposed or prepared"), "mass": ("MASSFILE", "masses used to normalise"),
    "ivar": ("IVARFILE", "inverse variances used"), "normalize": ("NORMALIZ", "spectra normalised by mass"),
    "checkpoint": ("CHECKPT", "checkpoint folder"), "checkpoint_sources": ("CKPTSRC", "what the checkpoint holds"),
    "params_sha256": ("CKPTSHA", "SHA-256 of the params and trust calibration"),
    "bpt_scheme": ("BPTSCHEM", "[NII] BPT scheme (docs/model.md)"), "precision": ("PRECISN", "compute precision"),
    "mc_samples": ("MCSAMPLE", "Monte-Carlo dropout passes (0: off)"), "mc_seed": ("MCSEED", "dropout seed"),
    "coverage": ("COVERAGE", "prepare coverage policy"), "snr_policy": ("SNRPOL", "prepare gate policy"),
    "stellar_mass": ("STARMASS", "prepare's log_stellar_mass: units, cosmology"),
    "mass_source": ("MASSSRC", "where decompose took the masses from"),
    "mass_convention": ("MASSCONV", "the checkpoint's mass convention (mass_used)"),
    "resolution": ("RESOLUTN", "prepare resolution: manga (matched) or native"),
    "extinction_law": ("EXTLAW", "Galactic extinction law prepare corrected with"),
    "ebv": ("EBVALL", "--ebv: E(B-V) where the file and z table give none"),
    "ebv_galactic": ("EBVRANGE", "Galactic E(B-V) corrected for (per spectrum in ebv_galactic)"),
    "max_filled": ("MAXFILL", "prepare's largest share of filled bins"),
}

# The line quantities (constants.LINE_QUANTITIES), for people.
QUANTITY_DESCRIPTIONS = {
    "log_nii_ha": "log [NII]6584/Halpha", "log_oiii_hb": "log [OIII]5007/Hbeta", "log_oi_ha": "log [OI]6300/Halpha",
    "log_oii_hb": "log [OII]3726,3729/Hbeta", "log_ha_hb": "log Halpha/Hbeta", "log_sii_ratio": "log [SII]6717/6731",
    "log_sii_ha": "log [SII]6717,6731/Halpha", "log_ha_ew": "log Halpha EW (Angstrom)", "bpt_nii": "[NII] BPT class",
    "bpt_class": "[NII] BPT class",
}

# ----------------------------------------------------------------------------- inputs

# Plain-array spectra (.npz: wavelength, flux, ivar; optional mask, z, ids) and CSV columns.
SPECTRA_NPZ_KEYS = ("wavelength", "flux", "ivar", "mask", "z", "ids")
SPECTRA_CSV_COLUMNS = ("wavelength", "flux", "ivar", "mask")
# The bundled real evaluation set (data/real_eval.npz, rebuilt by tools/make_real_eval.py).
REAL_SET_KEYS = ("flux", "ivar", "mask", "ids", "name", "line_names", "line_snr", "passes_gate", "broad_balmer",
                 "measured_class", "log_nii_ha", "log_oiii_hb", "log_sii_ha")
# A checkpoint's `expects` metadata: each key and its type.
EXPECTS_KEYS = {"needs_mass": bool, "grid": str, "normalisation": str, "trained_on": str, "line_snr_min": float,
                "mass_convention": str}
# expects.mass_convention: what the network divides each standardised spectrum by (docs/model.md#the-mass).
MASS_LOG10, MASS_LINEAR, MASS_NONE = ("log10 stellar mass in the fibre, Msun", "stellar mass in the fibre, Msun",
                                      "none")
MASS_CONVENTIONS = (MASS_LOG10, MASS_LINEAR, MASS_NONE)
TRUST_FILE = "trust.npz"  # the trust calibration, beside a checkpoint's params
# The bundled tables: the stellar templates (data/templates_bc03.npz) and the nebular/dust table
# (data/nebular_dust.npz: NEBULAR_KEYS, and <grid>_<key> for each of NEBULAR_GRID_KEYS per grid).
TEMPLATE_KEYS = ("wavelength", "flux", "ages_gyr", "metallicities", "norms", "fwhm_angstrom", "velscale")
NEBULAR_KEYS = ("line_names", "wavelength", "curves", "attenuation", "line_attenuation")
NEBULAR_GRID_KEYS = ("params", "param_names", "fluxes")

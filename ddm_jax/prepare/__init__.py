"""From `Spectrum` records to DDM inputs: `continuum` (the stellar fit), `lines` (the emission-line
fit, ratios, S/N criterion), `fit` (both, twice, per spectrum) and `pipeline` (the `prepare`
command: read, rebin, fit, gate, write PREPARED)."""

"""From survey files to DDM inputs: `readers` (files -> `Spectrum` records), `resample`
(flux-conserving rebin onto the rest-frame grid), `lines` (emission-line fit, ratios, S/N
gate) and `pipeline` (the `prepare` command: all of it, into PREPARED.npz)."""

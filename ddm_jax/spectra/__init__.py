"""Spectra before the network: the `Spectrum` record every loader returns (`spectrum`) and the
flux-conserving rebin onto the rest-frame grid with its coverage check (`resample`)."""
